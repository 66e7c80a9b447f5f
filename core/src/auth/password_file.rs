//! Mosquitto's `password_file`: the format `mosquitto_passwd` writes, parsed
//! from text, and the password check the broker makes against it.
//!
//! Each line is `user:hash`, where the hash is one of Mosquitto's two
//! schemes (Mosquitto 2.0, `src/security_default.c` and
//! `src/password_mosq.c`):
//!
//! - `$6$<salt>$<hash>`: SHA-512 of the password followed by the salt
//!   (`mosquitto_passwd -H sha512`, the default of Mosquitto 1.6 and
//!   earlier);
//! - `$7$<iterations>$<salt>$<hash>`: PBKDF2-HMAC-SHA512 with the password
//!   as key and the given iteration count (`mosquitto_passwd` 2.0's
//!   default, 101 iterations; `-I` chooses another count).
//!
//! Salt and hash are standard base64 (`+/`, `=` padding). The salt is 12
//! bytes as Mosquitto 2.0 writes it, or 64 bytes as Mosquitto 2.1 writes
//! it; the hash is always 64 bytes.
//!
//! # Where Culex differs from Mosquitto 2.0
//!
//! Mosquitto logs a bad line and drops it (or skips it silently, for a
//! line without `:`), so a typo locks a user out with nothing but a log
//! line to say why. Culex refuses the whole file instead, with a
//! [`PasswordFileError`] naming the file, the line and what is wrong, and
//! never the hash itself.
//!
//! Mosquitto 2.0 also takes a line whose password is not hashed
//! (`user:password`, as before `mosquitto_passwd -U`) and compares it as
//! plain text. Culex does not keep passwords in plain text: such a file is
//! refused too, and the error names every such line and its user (never
//! the password), so that one start-up tells everything to fix. Blank lines and lines whose first non-blank
//! character is `#` are comments (Mosquitto takes only a `#` in the first
//! column as one). Fields must be exactly as `mosquitto_passwd` writes
//! them: Mosquitto's `strtok` also accepts empty fields (`$$7$...`) and
//! ignores fields after the hash; Culex does not.
//!
//! Kept as Mosquitto does: user names and hashes are trimmed of blanks on
//! both sides (so CRLF files work); when a user appears twice, the last
//! line wins; a zero-length password never matches (Mosquitto reads an
//! empty password field as no password). Unlike Mosquitto, which compares
//! the password up to its first NUL byte, Culex hashes all its bytes.
//!
//! # Timing
//!
//! Hashes are compared in constant time, and a user name that is not in
//! the file costs the same work as one that is: [`PasswordFile::verifier`]
//! hands back a decoy that runs the file's most common scheme and
//! iteration count and then answers `false`. (Mosquitto 2.0 answers an
//! unknown user at once.)
//!
//! # Running the hash off the broker task
//!
//! A PBKDF2 check takes a moment. [`PasswordFile::verifier`] returns a
//! [`Verifier`] that owns what it needs (`Clone + Send + 'static`), so a
//! runtime can move it to a blocking thread pool, call
//! [`Verifier::verify`] there and hand the answer back:
//!
//! ```
//! use culex_core::auth::password_file::PasswordFile;
//!
//! let text = "# made by mosquitto_passwd\n\
//!     bob:$7$101$vwPGlJ7sh3J6tCWZ$Ts6NNQ0BGUvYk5i9+K327JkXVeJ6USTiMxhU1RF2xLM0f5PNQCWJliFuxcWSiJPvZ+tJvxwzjk9qvh1FvXVk3w==\n";
//! let file = PasswordFile::parse("/etc/mosquitto/passwd", text)?;
//! let check = file.verifier("bob");
//! let accepted = std::thread::spawn(move || check.verify(b"hunter2")).join().unwrap();
//! assert!(accepted);
//! assert!(!file.verify("bob", b"hunter3"));
//! assert!(!file.verify("mallory", b"hunter2"));
//! # Ok::<(), culex_core::auth::password_file::PasswordFileError>(())
//! ```

use std::collections::HashMap;
use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD_PAD_INDIFFERENT;
use sha2::{Digest as _, Sha512};
use subtle::{Choice, ConstantTimeEq as _};

/// Length in bytes of every hash in the file (SHA-512's output).
pub const HASH_LEN: usize = 64;
/// Salt length written by `mosquitto_passwd` 2.0 (and the only one
/// Mosquitto 2.0 accepts).
pub const SALT_LEN: usize = 12;
/// Salt length written by Mosquitto 2.1 (`EVP_MAX_MD_SIZE`).
pub const LONG_SALT_LEN: usize = 64;
/// Iteration count `mosquitto_passwd` 2.0 writes unless told otherwise
/// (`PW_DEFAULT_ITERATIONS` in `src/password_mosq.h`).
pub const DEFAULT_ITERATIONS: u32 = 101;
/// Largest iteration count: Mosquitto keeps it in a C `int`.
pub const MAX_ITERATIONS: u32 = i32::MAX as u32;
/// Longest user name an MQTT client can send.
pub const MAX_USERNAME_LEN: usize = 65_535;

/// A password file that cannot be used. Displayed as `file:line: reason`,
/// like [`ConfError`](crate::conf::ConfError); it never contains any part
/// of a hash.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}: {reason}")]
pub struct PasswordFileError {
    /// The file, as given to [`PasswordFile::parse`].
    pub file: String,
    /// The 1-based line number.
    pub line: usize,
    /// What is wrong with the line.
    pub reason: LineError,
}

/// What is wrong with a line of a password file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LineError {
    /// No `:` between user name and hash.
    #[error("missing ':' between user name and password hash")]
    MissingColon,
    /// Nothing before the `:`.
    #[error("empty user name")]
    EmptyUsername,
    /// A user name no MQTT client can send.
    #[error("user name longer than 65535 bytes")]
    UsernameTooLong,
    /// Nothing after the `:`.
    #[error("empty password hash")]
    EmptyHash,
    /// Passwords that do not start with `$`: plain text, as Mosquitto 2.0
    /// accepts them. The error's line is the first of them.
    #[error(transparent)]
    NotHashed(Unhashed),
    /// A Mosquitto 2.1 `$argon2id$` hash.
    #[error("argon2id password hashes are not supported; use $7$ (mosquitto_passwd -H sha512-pbkdf2)")]
    Argon2Unsupported,
    /// A hash type other than `$6$` and `$7$`.
    #[error("unknown password hash type (expected $6$ or $7$)")]
    UnknownHashType,
    /// The hash has the wrong number of `$`-separated fields.
    #[error("malformed password hash (expected {})", .0.form())]
    MalformedHash(HashType),
    /// The `$7$` iteration count is not a number from 1 to 2147483647.
    #[error("iteration count is not a number from 1 to 2147483647")]
    BadIterations,
    /// The salt is not base64.
    #[error("password salt is not valid base64")]
    SaltNotBase64,
    /// The salt decodes to the wrong length.
    #[error("password salt is {0} bytes long (expected 12 or 64)")]
    SaltLength(usize),
    /// The hash is not base64.
    #[error("password hash is not valid base64")]
    HashNotBase64,
    /// The hash decodes to the wrong length.
    #[error("password hash is {0} bytes long (expected 64)")]
    HashLength(usize),
}

/// The lines of a password file whose password is plain text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct Unhashed {
    /// Each such line's number and user name, in file order.
    pub users: Vec<(usize, String)>,
    /// No line of the file is hashed: `mosquitto_passwd -U` fixes it
    /// whole. (It hashes every line, so it would break a file where some
    /// are hashed already.)
    pub every_line: bool,
}

impl fmt::Display for Unhashed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("passwords are not hashed for ")?;
        for (index, (line, user)) in self.users.iter().enumerate() {
            let separator = if index == 0 { "" } else { ", " };
            write!(f, "{separator}user {user} (line {line})")?;
        }
        f.write_str(": plain-text passwords are not supported; ")?;
        if self.every_line {
            f.write_str("run mosquitto_passwd -U on the file to hash them")
        } else {
            f.write_str(
                "set each of these passwords with mosquitto_passwd -b FILE USER PASSWORD (mosquitto_passwd -U would \
                 hash the lines already hashed a second time)",
            )
        }
    }
}

/// Mosquitto's two password hash schemes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HashType {
    /// `$6$`: SHA-512 of password then salt.
    Sha512,
    /// `$7$`: PBKDF2-HMAC-SHA512.
    Sha512Pbkdf2,
}

impl HashType {
    /// The line format of this scheme, for error messages.
    const fn form(self) -> &'static str {
        match self {
            Self::Sha512 => "$6$<salt>$<hash>",
            Self::Sha512Pbkdf2 => "$7$<iterations>$<salt>$<hash>",
        }
    }
}

/// The stored hash of one user. `Clone + Send + 'static`, so that a
/// runtime can check a password on another thread. Its `Debug` shows the
/// scheme, never salt or hash. Two entries are equal when a reload left
/// the user's line as it was.
#[derive(Clone, PartialEq, Eq)]
pub struct PasswordEntry {
    hash_type: HashType,
    /// 1 for `$6$`.
    iterations: u32,
    salt: Box<[u8]>,
    hash: [u8; HASH_LEN],
}

impl fmt::Debug for PasswordEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PasswordEntry")
            .field("hash_type", &self.hash_type)
            .field("iterations", &self.iterations())
            .finish_non_exhaustive()
    }
}

impl PasswordEntry {
    /// The scheme of this entry.
    pub fn hash_type(&self) -> HashType {
        self.hash_type
    }

    /// The PBKDF2 iteration count (`None` for `$6$`).
    pub fn iterations(&self) -> Option<u32> {
        match self.hash_type {
            HashType::Sha512 => None,
            HashType::Sha512Pbkdf2 => Some(self.iterations),
        }
    }

    /// Whether `password` is this user's password, compared in constant
    /// time. A zero-length password never matches (as in Mosquitto, where
    /// it reads as no password), though the hash is still computed.
    pub fn verify(&self, password: &[u8]) -> bool {
        bool::from(self.matches(password) & Choice::from(u8::from(!password.is_empty())))
    }

    fn matches(&self, password: &[u8]) -> Choice {
        self.derive(password).ct_eq(&self.hash)
    }

    /// The hash of `password` under this entry's scheme, salt and
    /// iteration count (Mosquitto's `pw__digest`).
    fn derive(&self, password: &[u8]) -> [u8; HASH_LEN] {
        #[cfg(test)]
        tests::record_derivation(self.hash_type, self.iterations);
        match self.hash_type {
            HashType::Sha512 => {
                let mut digest = Sha512::new();
                digest.update(password);
                digest.update(&self.salt);
                digest.finalize().into()
            }
            HashType::Sha512Pbkdf2 => {
                let mut out = [0u8; HASH_LEN];
                pbkdf2::pbkdf2_hmac::<Sha512>(password, &self.salt, self.iterations, &mut out);
                out
            }
        }
    }
}

/// A password check for one user name, detached from the
/// [`PasswordFile`]: `Clone + Send + 'static`, to be run on a blocking
/// thread pool. For a user name that is not in the file it does the same
/// work as for one that is, and answers `false`.
#[derive(Debug, Clone)]
pub struct Verifier {
    entry: PasswordEntry,
    known: bool,
}

impl Verifier {
    /// Whether `password` is the user's password. Takes the same time for
    /// unknown users as for known users of the file's most common scheme.
    pub fn verify(&self, password: &[u8]) -> bool {
        let matches = self.entry.matches(password);
        let accept = matches & Choice::from(u8::from(self.known)) & Choice::from(u8::from(!password.is_empty()));
        bool::from(accept)
    }

    /// Whether the user name is in the file. Reading this before
    /// [`verify`](Self::verify) and skipping the work for unknown users
    /// would bring back the timing difference this type exists to hide.
    pub fn is_known_user(&self) -> bool {
        self.known
    }
}

/// The users of a password file and their hashes. Its `Debug` shows how
/// many users there are, nothing else.
#[derive(Clone)]
pub struct PasswordFile {
    users: HashMap<String, PasswordEntry>,
    /// Checked in place of a user who is not in the file.
    decoy: PasswordEntry,
}

impl fmt::Debug for PasswordFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PasswordFile").field("users", &self.users.len()).finish_non_exhaustive()
    }
}

impl PasswordFile {
    /// Parses the text of a password file. `path_for_messages` names the
    /// file in errors. Any malformed line fails the whole file: the first
    /// one is reported, or else every line whose password is plain text.
    pub fn parse(path_for_messages: &str, text: &str) -> Result<Self, PasswordFileError> {
        let error = |line, reason| PasswordFileError { file: path_for_messages.to_owned(), line, reason };
        let mut users = HashMap::new();
        let mut unhashed = Vec::new();
        for (index, line) in text.split('\n').enumerate() {
            let trimmed = trim_blanks(line);
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            match parse_line(trimmed).map_err(|reason| error(index + 1, reason))? {
                // The last line of a user wins, as in Mosquitto 2.0.
                (username, Some(hash)) => {
                    users.insert(username.to_owned(), hash);
                }
                (username, None) => unhashed.push((index + 1, username.to_owned())),
            }
        }
        if let Some(&(first, _)) = unhashed.first() {
            let every_line = users.is_empty();
            return Err(error(first, LineError::NotHashed(Unhashed { users: unhashed, every_line })));
        }
        let decoy = decoy_for(&users);
        Ok(Self { users, decoy })
    }

    /// Whether `password` is the password of `username`. Unknown users
    /// cost the same work and get `false`; a zero-length password is
    /// refused. This runs the hash on the calling thread: see
    /// [`verifier`](Self::verifier) to run it elsewhere.
    pub fn verify(&self, username: &str, password: &[u8]) -> bool {
        self.verifier(username).verify(password)
    }

    /// A detached check for `username`, to run on another thread. For a
    /// user who is not in the file it checks against a decoy and answers
    /// `false`.
    pub fn verifier(&self, username: &str) -> Verifier {
        match self.users.get(username) {
            Some(entry) => Verifier { entry: entry.clone(), known: true },
            None => Verifier { entry: self.decoy.clone(), known: false },
        }
    }

    /// The stored hash of `username`, if it is in the file. Prefer
    /// [`verifier`](Self::verifier), which hides from timing which users
    /// exist.
    pub fn entry(&self, username: &str) -> Option<PasswordEntry> {
        self.users.get(username).cloned()
    }

    /// How many users the file defines.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    /// Whether the file defines no user (every password is then refused).
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }
}

/// Trims what C's `isspace` calls blank, as Mosquitto's
/// `misc__trimblanks` does (Rust's `trim` would also take Unicode spaces
/// off a user name).
fn trim_blanks(s: &str) -> &str {
    s.trim_matches(|c| matches!(c, ' ' | '\t' | '\n' | '\r' | '\x0b' | '\x0c'))
}

/// The user name of a line and its hash; `None` for a password in plain
/// text (one that does not start with `$`).
fn parse_line(line: &str) -> Result<(&str, Option<PasswordEntry>), LineError> {
    let (username, hash) = line.split_once(':').ok_or(LineError::MissingColon)?;
    let username = trim_blanks(username);
    let hash = trim_blanks(hash);
    if username.is_empty() {
        return Err(LineError::EmptyUsername);
    }
    if username.len() > MAX_USERNAME_LEN {
        return Err(LineError::UsernameTooLong);
    }
    if hash.is_empty() {
        return Err(LineError::EmptyHash);
    }
    match hash.strip_prefix('$') {
        Some(rest) => Ok((username, Some(parse_hash(rest)?))),
        None => Ok((username, None)),
    }
}

/// A hash after its leading `$`.
fn parse_hash(rest: &str) -> Result<PasswordEntry, LineError> {
    let mut fields = rest.split('$');
    let (hash_type, iterations) = match fields.next() {
        Some("6") => (HashType::Sha512, 1),
        Some("7") => {
            let iterations = fields.next().ok_or(LineError::MalformedHash(HashType::Sha512Pbkdf2))?;
            (HashType::Sha512Pbkdf2, parse_iterations(iterations)?)
        }
        Some("argon2id") => return Err(LineError::Argon2Unsupported),
        _ => return Err(LineError::UnknownHashType),
    };
    let (Some(salt), Some(hash), None) = (fields.next(), fields.next(), fields.next()) else {
        return Err(LineError::MalformedHash(hash_type));
    };
    let salt = STANDARD_PAD_INDIFFERENT.decode(salt).map_err(|_| LineError::SaltNotBase64)?;
    if salt.len() != SALT_LEN && salt.len() != LONG_SALT_LEN {
        return Err(LineError::SaltLength(salt.len()));
    }
    let hash = STANDARD_PAD_INDIFFERENT.decode(hash).map_err(|_| LineError::HashNotBase64)?;
    let hash: [u8; HASH_LEN] = hash.as_slice().try_into().map_err(|_| LineError::HashLength(hash.len()))?;
    Ok(PasswordEntry { hash_type, iterations, salt: salt.into_boxed_slice(), hash })
}

/// Decimal digits only (Mosquitto's `atoi` would also take `+101`,
/// ` 101` or `101abc`), from 1 to [`MAX_ITERATIONS`].
fn parse_iterations(field: &str) -> Result<u32, LineError> {
    if field.is_empty() || !field.bytes().all(|b| b.is_ascii_digit()) {
        return Err(LineError::BadIterations);
    }
    match field.parse::<u32>() {
        Ok(n @ 1..=MAX_ITERATIONS) => Ok(n),
        _ => Err(LineError::BadIterations),
    }
}

/// The entry checked for unknown users: the most common scheme, iteration
/// count and salt length of the file (the costliest among equals), or
/// `mosquitto_passwd`'s default for an empty file. Its salt and hash are
/// zeros; [`Verifier`] refuses it whatever the hash says.
fn decoy_for(users: &HashMap<String, PasswordEntry>) -> PasswordEntry {
    let mut counts: HashMap<(HashType, u32, usize), usize> = HashMap::new();
    for entry in users.values() {
        *counts.entry((entry.hash_type, entry.iterations, entry.salt.len())).or_default() += 1;
    }
    let (hash_type, iterations, salt_len) = counts
        .into_iter()
        .max_by_key(|&((hash_type, iterations, salt_len), count)| {
            (count, hash_type == HashType::Sha512Pbkdf2, iterations, salt_len)
        })
        .map_or((HashType::Sha512Pbkdf2, DEFAULT_ITERATIONS, SALT_LEN), |(key, _)| key);
    PasswordEntry { hash_type, iterations, salt: vec![0; salt_len].into_boxed_slice(), hash: [0; HASH_LEN] }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use quickcheck::{Arbitrary, Gen, QuickCheck};

    use super::*;

    const PBKDF2_FILE: &str = include_str!("../../tests/data/passwd/pbkdf2.passwd");
    const SHA512_FILE: &str = include_str!("../../tests/data/passwd/sha512.passwd");
    const MIXED_FILE: &str = include_str!("../../tests/data/passwd/mixed.passwd");

    /// The password of `raw` in the golden files: not UTF-8.
    const RAW_PASSWORD: &[u8] = b"bin\xff\xfe\x80ary";
    const UNICODE_PASSWORD: &str = "pässwörd ✓ 密码";
    /// A 12-byte salt and a 64-byte hash, both valid base64.
    const SALT12: &str = "vwPGlJ7sh3J6tCWZ";
    const HASH64: &str = "Ts6NNQ0BGUvYk5i9+K327JkXVeJ6USTiMxhU1RF2xLM0f5PNQCWJliFuxcWSiJPvZ+tJvxwzjk9qvh1FvXVk3w==";
    /// Built with Python's `hashlib.pbkdf2_hmac("sha512", ...)` with salt
    /// bytes 0..64 and 1000 iterations: the form Mosquitto 2.1 writes.
    const LONG_SALT_LINE: &str = "future:$7$1000$AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUmJygpKissLS4vMDEyMzQ1Njc4OTo7PD0+Pw==$rRceNRbJsD5fzSG7V76fQUIny/kfCCW7T3qfYfaod+qhJG/UzIPVaH/2EErHQ7YRd1da2wfk8Zcq3+OW43oh/g==";

    thread_local! {
        static DERIVATIONS: RefCell<Vec<(HashType, u32)>> = const { RefCell::new(Vec::new()) };
    }

    /// Test hook called by [`PasswordEntry::derive`]: counts each hash
    /// computed on this thread, with its scheme and iteration count.
    pub(super) fn record_derivation(hash_type: HashType, iterations: u32) {
        DERIVATIONS.with(|d| d.borrow_mut().push((hash_type, iterations)));
    }

    fn take_derivations() -> Vec<(HashType, u32)> {
        DERIVATIONS.with(|d| std::mem::take(&mut *d.borrow_mut()))
    }

    fn parse(text: &str) -> PasswordFile {
        match PasswordFile::parse("test.passwd", text) {
            Ok(file) => file,
            Err(e) => panic!("{e}"),
        }
    }

    fn parse_err(text: &str) -> PasswordFileError {
        match PasswordFile::parse("test.passwd", text) {
            Ok(file) => panic!("parsed: {file:?}"),
            Err(e) => e,
        }
    }

    /// Builds a line with the documented algorithms, as `mosquitto_passwd`
    /// would write it.
    fn encode(username: &str, password: &[u8], hash_type: HashType, iterations: u32, salt: &[u8]) -> String {
        let entry = PasswordEntry { hash_type, iterations, salt: salt.into(), hash: [0; HASH_LEN] };
        let hash = STANDARD_PAD_INDIFFERENT.encode(entry.derive(password));
        let salt = STANDARD_PAD_INDIFFERENT.encode(salt);
        match hash_type {
            HashType::Sha512 => format!("{username}:$6${salt}${hash}\n"),
            HashType::Sha512Pbkdf2 => format!("{username}:$7${iterations}${salt}${hash}\n"),
        }
    }

    #[test]
    fn pbkdf2_golden_file_right_password_accepted() {
        let file = parse(PBKDF2_FILE);
        assert_eq!(file.len(), 7);
        assert!(file.verify("alice", b"correct horse battery staple"));
        assert!(file.verify("bob", b"hunter2"));
        assert!(file.verify("carol", b"one-iteration"));
        assert!(file.verify("dave", b"thousand-iterations"));
        assert!(file.verify("émile", UNICODE_PASSWORD.as_bytes()));
        assert!(file.verify("raw", RAW_PASSWORD));
    }

    #[test]
    fn pbkdf2_golden_file_wrong_password_refused() {
        let file = parse(PBKDF2_FILE);
        assert!(!file.verify("alice", b"correct horse battery stapl"));
        assert!(!file.verify("alice", b"correct horse battery staple "));
        assert!(!file.verify("alice", b"Correct horse battery staple"));
        assert!(!file.verify("bob", b"correct horse battery staple"));
        assert!(!file.verify("dave", b"thousand-iteration"));
        assert!(!file.verify("raw", b"binary"));
        // All bytes count: Mosquitto would stop at the NUL and accept.
        assert!(!file.verify("bob", b"hunter2\0extra"));
    }

    #[test]
    fn pbkdf2_golden_file_iteration_counts_read() {
        let file = parse(PBKDF2_FILE);
        let iterations = |user| file.entry(user).and_then(|e| e.iterations());
        assert_eq!(iterations("alice"), Some(DEFAULT_ITERATIONS));
        assert_eq!(iterations("carol"), Some(1));
        assert_eq!(iterations("dave"), Some(1000));
        take_derivations();
        assert!(file.verify("dave", b"thousand-iterations"));
        assert!(file.verify("carol", b"one-iteration"));
        assert_eq!(take_derivations(), [(HashType::Sha512Pbkdf2, 1000), (HashType::Sha512Pbkdf2, 1)]);
    }

    #[test]
    fn sha512_golden_file_right_password_accepted() {
        let file = parse(SHA512_FILE);
        assert_eq!(file.len(), 4);
        assert_eq!(file.entry("alice").map(|e| e.hash_type()), Some(HashType::Sha512));
        assert_eq!(file.entry("alice").and_then(|e| e.iterations()), None);
        assert!(file.verify("alice", b"correct horse battery staple"));
        assert!(file.verify("bob", b"hunter2"));
        assert!(file.verify("émile", UNICODE_PASSWORD.as_bytes()));
        assert!(file.verify("raw", RAW_PASSWORD));
    }

    #[test]
    fn sha512_golden_file_wrong_password_refused() {
        let file = parse(SHA512_FILE);
        assert!(!file.verify("alice", b"hunter2"));
        assert!(!file.verify("bob", b"hunter"));
        assert!(!file.verify("émile", "passwörd ✓ 密码".as_bytes()));
        assert!(!file.verify("raw", &RAW_PASSWORD[..RAW_PASSWORD.len() - 1]));
    }

    #[test]
    fn unknown_user_refused() {
        for text in [PBKDF2_FILE, SHA512_FILE, MIXED_FILE, ""] {
            let file = parse(text);
            assert!(!file.verify("nobody", b"hunter2"));
            assert!(!file.verify("Bob", b"hunter2"));
            assert!(!file.verify("", b"hunter2"));
            assert!(file.entry("nobody").is_none());
            assert!(!file.verifier("nobody").is_known_user());
        }
    }

    #[test]
    fn empty_password_refused_though_hash_matches() {
        let file = parse(PBKDF2_FILE);
        let Some(entry) = file.entry("empty") else { panic!("no user `empty`") };
        // The line is a correct hash of "" ...
        assert!(bool::from(entry.matches(b"")));
        // ... but Mosquitto reads a zero-length password as none, and
        // refused this user with `-P ''`.
        assert!(!entry.verify(b""));
        assert!(!file.verify("empty", b""));
        assert!(!file.verify("bob", b""));
    }

    #[test]
    fn mixed_golden_file_comments_blank_lines_crlf_and_both_schemes_accepted() {
        assert!(MIXED_FILE.contains("\r\n"), "the golden file lost its CRLF line");
        let file = parse(MIXED_FILE);
        assert_eq!(file.len(), 3);
        assert_eq!(file.entry("bob").map(|e| e.hash_type()), Some(HashType::Sha512));
        assert!(file.verify("bob", b"hunter2"));
        assert!(file.verify("alice", b"correct horse battery staple"));
    }

    #[test]
    fn duplicate_user_last_line_wins() {
        let file = parse(MIXED_FILE);
        assert!(file.verify("dup", b"second-password"));
        assert!(!file.verify("dup", b"first-password"));
    }

    #[test]
    fn long_salt_of_mosquitto_2_1_accepted() {
        let file = parse(LONG_SALT_LINE);
        assert!(file.verify("future", b"from-mosquitto-2.1"));
        assert!(!file.verify("future", b"from-mosquitto-2.0"));
        let sha = encode("future6", b"pw", HashType::Sha512, 1, &[7; LONG_SALT_LEN]);
        assert!(parse(&sha).verify("future6", b"pw"));
    }

    #[test]
    fn comments_and_blank_lines_skipped() {
        let line = format!("bob:$7$101${SALT12}${HASH64}");
        let text = format!("# comment\n\n   \n\t# indented comment: with colon\n#user:$6$x$y\n{line}\n\n# end");
        let file = parse(&text);
        assert_eq!(file.len(), 1);
        assert!(file.verify("bob", b"hunter2"));
        assert!(parse("").is_empty());
        assert!(parse("\n\n# only comments\n").is_empty());
    }

    #[test]
    fn blanks_around_fields_trimmed() {
        let text = format!(" \tbob \t: $7$101${SALT12}${HASH64} \r\n");
        assert!(parse(&text).verify("bob", b"hunter2"));
        // Unicode spaces are part of the user name, as in Mosquitto.
        let text = format!("bob\u{a0}:$7$101${SALT12}${HASH64}\n");
        let file = parse(&text);
        assert!(!file.verify("bob", b"hunter2"));
        assert!(file.verify("bob\u{a0}", b"hunter2"));
    }

    #[test]
    fn unpadded_base64_accepted() {
        let text = format!("bob:$7$101${SALT12}${}", HASH64.trim_end_matches('='));
        assert!(parse(&text).verify("bob", b"hunter2"));
    }

    #[test]
    fn malformed_line_error_names_file_line_and_reason() {
        let text = format!("# header\nbob:$7$101${SALT12}${HASH64}\n\nalice $7$101${SALT12}${HASH64}\n");
        let err = parse_err(&text);
        assert_eq!(err, PasswordFileError { file: "test.passwd".into(), line: 4, reason: LineError::MissingColon });
        assert_eq!(err.to_string(), "test.passwd:4: missing ':' between user name and password hash");
    }

    #[test]
    fn malformed_line_every_reason_reported() {
        let long_user = "u".repeat(MAX_USERNAME_LEN + 1);
        let cases: Vec<(String, LineError)> = vec![
            ("bob".into(), LineError::MissingColon),
            (format!("bob $7$101${SALT12}${HASH64}"), LineError::MissingColon),
            (format!(":$7$101${SALT12}${HASH64}"), LineError::EmptyUsername),
            (format!("  \t:$7$101${SALT12}${HASH64}"), LineError::EmptyUsername),
            (format!("{long_user}:$7$101${SALT12}${HASH64}"), LineError::UsernameTooLong),
            ("bob:".into(), LineError::EmptyHash),
            ("bob:  \r".into(), LineError::EmptyHash),
            ("bob:$argon2id$v=19$m=47104,t=1,p=1$c2FsdA$aGFzaA".into(), LineError::Argon2Unsupported),
            (format!("bob:$5${SALT12}${HASH64}"), LineError::UnknownHashType),
            (format!("bob:$$7$101${SALT12}${HASH64}"), LineError::UnknownHashType),
            ("bob:$".into(), LineError::UnknownHashType),
            ("bob:$7".into(), LineError::MalformedHash(HashType::Sha512Pbkdf2)),
            (format!("bob:$6${HASH64}"), LineError::MalformedHash(HashType::Sha512)),
            (format!("bob:$6${SALT12}${HASH64}$"), LineError::MalformedHash(HashType::Sha512)),
            (format!("bob:$6$101${SALT12}${HASH64}"), LineError::MalformedHash(HashType::Sha512)),
            (format!("bob:$7${SALT12}${HASH64}"), LineError::BadIterations),
            (format!("bob:$7$101${HASH64}"), LineError::MalformedHash(HashType::Sha512Pbkdf2)),
            (format!("bob:$7$101${SALT12}${HASH64}$extra"), LineError::MalformedHash(HashType::Sha512Pbkdf2)),
            (format!("bob:$7$101${SALT12}${HASH64}:extra"), LineError::HashNotBase64),
            (format!("bob:$7$0${SALT12}${HASH64}"), LineError::BadIterations),
            (format!("bob:$7$-1${SALT12}${HASH64}"), LineError::BadIterations),
            (format!("bob:$7$+101${SALT12}${HASH64}"), LineError::BadIterations),
            (format!("bob:$7$101abc${SALT12}${HASH64}"), LineError::BadIterations),
            (format!("bob:$7$${SALT12}${HASH64}"), LineError::BadIterations),
            (format!("bob:$7$2147483648${SALT12}${HASH64}"), LineError::BadIterations),
            (format!("bob:$7$99999999999999999999${SALT12}${HASH64}"), LineError::BadIterations),
            (format!("bob:$7$101$vwPGlJ7s!3J6tCWZ${HASH64}"), LineError::SaltNotBase64),
            (format!("bob:$7$101$vwPG lJ7sh3J6tCWZ${HASH64}"), LineError::SaltNotBase64),
            (format!("bob:$7$101$${HASH64}"), LineError::SaltLength(0)),
            (format!("bob:$7$101$vwPGlJ7sh3J6tCWZvwPG${HASH64}"), LineError::SaltLength(15)),
            (format!("bob:$6$vwPGlJ7sh3J6${HASH64}"), LineError::SaltLength(9)),
            (format!("bob:$7$101${SALT12}$Ts6N-Q0B"), LineError::HashNotBase64),
            (format!("bob:$7$101${SALT12}$"), LineError::HashLength(0)),
            (format!("bob:$7$101${SALT12}${SALT12}"), LineError::HashLength(12)),
            (format!("bob:$6${SALT12}${}AAAA", HASH64.trim_end_matches('=')), LineError::HashLength(67)),
        ];
        for (line, reason) in cases {
            let text = format!("# ok\nalice:$6${SALT12}${HASH64}\n{line}\n");
            let err = parse_err(&text);
            assert_eq!((err.line, &err.reason), (3, &reason), "line {line:?}");
            let message = err.to_string();
            assert!(message.starts_with("test.passwd:3: "), "{message}");
            // The hash, salt or plain-text password never reaches the message.
            for secret in [SALT12, "Ts6N", "hunter2", "c2FsdA", "vwPG"] {
                assert!(!message.contains(secret), "{message} echoes {secret}");
            }
        }
    }

    #[test]
    fn error_messages_read_well() {
        let cases = [
            ("bob:$7", "malformed password hash (expected $7$<iterations>$<salt>$<hash>)"),
            ("bob:$6$a", "malformed password hash (expected $6$<salt>$<hash>)"),
            ("bob:$6$$", "password salt is 0 bytes long (expected 12 or 64)"),
        ];
        for (line, reason) in cases {
            let message = parse_err(line).to_string();
            assert!(message.starts_with(&format!("test.passwd:1: {reason}")), "{message}");
        }
    }

    #[test]
    fn every_plain_text_password_is_named_with_its_user_and_line() {
        let hashed = format!("alice:$7$101${SALT12}${HASH64}");
        let text = format!("# users\nbob:hunter2\n{hashed}\n\ncarol : s3cret \ndave:7$101${SALT12}${HASH64}\n");
        let err = parse_err(&text);
        let users = vec![(2, "bob".to_owned()), (5, "carol".to_owned()), (6, "dave".to_owned())];
        assert_eq!((err.line, &err.reason), (2, &LineError::NotHashed(Unhashed { users, every_line: false })));
        let message = err.to_string();
        assert_eq!(
            message,
            "test.passwd:2: passwords are not hashed for user bob (line 2), user carol (line 5), user dave (line \
             6): plain-text passwords are not supported; set each of these passwords with mosquitto_passwd -b FILE \
             USER PASSWORD (mosquitto_passwd -U would hash the lines already hashed a second time)"
        );
        for secret in ["hunter2", "s3cret", SALT12] {
            assert!(!message.contains(secret), "{message} echoes {secret}");
        }
    }

    #[test]
    fn a_file_of_plain_text_passwords_only_is_told_to_run_mosquitto_passwd_u() {
        let err = parse_err("bob:hunter2\ncarol:x\n");
        assert_eq!(
            err.to_string(),
            "test.passwd:1: passwords are not hashed for user bob (line 1), user carol (line 2): plain-text \
             passwords are not supported; run mosquitto_passwd -U on the file to hash them"
        );
    }

    #[test]
    fn a_malformed_line_is_reported_before_plain_text_passwords() {
        let err = parse_err("bob:hunter2\ncarol\n");
        assert_eq!((err.line, err.reason), (2, LineError::MissingColon));
    }

    #[test]
    fn first_bad_line_reported() {
        let err = parse_err("bob\nalice:\n");
        assert_eq!((err.line, err.reason), (1, LineError::MissingColon));
    }

    #[test]
    fn password_with_non_ascii_bytes_round_trips() {
        let passwords: [&[u8]; 4] = [RAW_PASSWORD, "ключ🔑".as_bytes(), b"\x00\x01\x7f\xff", b"\xc3\x28"];
        for password in passwords {
            for hash_type in [HashType::Sha512, HashType::Sha512Pbkdf2] {
                let file = parse(&encode("u", password, hash_type, 3, &[9; SALT_LEN]));
                assert!(file.verify("u", password));
                assert!(!file.verify("u", &password[1..]));
            }
        }
    }

    #[test]
    fn unknown_user_does_the_same_derivation_as_known_user() {
        let file = parse(PBKDF2_FILE);
        take_derivations();
        assert!(!file.verify("alice", b"wrong"));
        let known = take_derivations();
        assert!(!file.verify("nobody", b"wrong"));
        let unknown = take_derivations();
        assert_eq!(known, [(HashType::Sha512Pbkdf2, DEFAULT_ITERATIONS)]);
        assert_eq!(unknown, known);
        // An empty password is refused only after the work, too.
        assert!(!file.verify("nobody", b""));
        assert_eq!(take_derivations(), known);
    }

    #[test]
    fn unknown_user_decoy_follows_the_most_common_scheme() {
        let file = parse(SHA512_FILE);
        take_derivations();
        assert!(!file.verify("nobody", b"x"));
        assert_eq!(take_derivations(), [(HashType::Sha512, 1)]);

        let mut text = String::new();
        for (user, iterations) in [("a", 5), ("b", 7), ("c", 7), ("d", 5), ("e", 7)] {
            text.push_str(&encode(user, b"pw", HashType::Sha512Pbkdf2, iterations, &[1; SALT_LEN]));
        }
        let file = parse(&text);
        take_derivations();
        assert!(!file.verify("nobody", b"pw"));
        assert_eq!(take_derivations(), [(HashType::Sha512Pbkdf2, 7)]);

        let empty = parse("");
        take_derivations();
        assert!(!empty.verify("nobody", b"pw"));
        assert_eq!(take_derivations(), [(HashType::Sha512Pbkdf2, DEFAULT_ITERATIONS)]);
    }

    #[test]
    fn decoy_refused_even_when_its_hash_matches() {
        // A decoy whose stored hash happens to equal the derived one.
        let mut entry = PasswordEntry {
            hash_type: HashType::Sha512,
            iterations: 1,
            salt: vec![0; SALT_LEN].into_boxed_slice(),
            hash: [0; HASH_LEN],
        };
        entry.hash = entry.derive(b"pw");
        assert!(Verifier { entry: entry.clone(), known: true }.verify(b"pw"));
        assert!(!Verifier { entry, known: false }.verify(b"pw"));
    }

    #[test]
    fn verifier_sent_to_another_thread_accepted() {
        fn assert_send_static<T: Send + Clone + 'static>(_: &T) {}
        let file = parse(PBKDF2_FILE);
        let check = file.verifier("bob");
        assert_send_static(&check);
        assert!(check.is_known_user());
        let entry = file.entry("bob");
        assert_send_static(&entry);
        let handle = std::thread::spawn(move || (check.verify(b"hunter2"), check.verify(b"hunter3")));
        assert_eq!(handle.join().ok(), Some((true, false)));
        assert!(entry.is_some_and(|e| e.verify(b"hunter2")));
    }

    #[test]
    fn debug_output_hides_hashes() {
        let file = parse(PBKDF2_FILE);
        assert_eq!(format!("{file:?}"), "PasswordFile { users: 7, .. }");
        let debug = format!("{:?}", file.verifier("bob"));
        assert!(debug.contains("Sha512Pbkdf2") && debug.contains("101"), "{debug}");
        assert!(!debug.contains("vwPG") && !debug.contains("Ts6N") && !debug.contains("hash:"), "{debug}");
    }

    fn quickcheck(tests: u64) -> QuickCheck {
        QuickCheck::new().tests(tests).rng(Gen::new(64))
    }

    /// Text made of pieces of real lines, so that the parser gets past the
    /// first checks.
    #[derive(Debug, Clone)]
    struct LineSoup(String);

    impl Arbitrary for LineSoup {
        fn arbitrary(g: &mut Gen) -> Self {
            const WORDS: &str = "$|6|7|:|#|\n|\r| |\t|bob|é|101|0|-|=|==|+/|AAAA|argon2id|\u{a0}|99999999999";
            let pieces: Vec<&str> = WORDS.split('|').chain([SALT12, HASH64]).collect();
            let len = usize::arbitrary(g) % 40;
            Self((0..len).filter_map(|_| g.choose(&pieces).copied()).collect())
        }

        fn shrink(&self) -> Box<dyn Iterator<Item = Self>> {
            Box::new(self.0.shrink().map(Self))
        }
    }

    #[test]
    fn arbitrary_text_never_panics_parser() {
        fn prop(text: String) -> bool {
            let _ = PasswordFile::parse("q.passwd", &text);
            true
        }
        quickcheck(2000).quickcheck(prop as fn(String) -> bool);
    }

    #[test]
    fn arbitrary_line_pieces_never_panic_parser() {
        fn prop(soup: LineSoup) -> bool {
            // No verify here: the pieces can spell a huge iteration count.
            match PasswordFile::parse("q.passwd", &soup.0) {
                Ok(file) => file.len() <= soup.0.split('\n').count(),
                Err(e) => e.line >= 1 && e.line <= soup.0.split('\n').count(),
            }
        }
        quickcheck(3000).quickcheck(prop as fn(LineSoup) -> bool);
    }

    #[test]
    fn encoded_entries_round_trip_property() {
        fn prop(username: String, password: Vec<u8>, sha: bool, iterations: u8, salt: Vec<u8>) -> bool {
            let username = username.replace([':', '\n'], "");
            let username = trim_blanks(&username);
            if username.is_empty() || username.starts_with('#') || password.is_empty() {
                return true;
            }
            let (hash_type, iterations) =
                if sha { (HashType::Sha512, 1) } else { (HashType::Sha512Pbkdf2, u32::from(iterations % 4) + 1) };
            let mut salt12 = [0u8; SALT_LEN];
            salt12.iter_mut().zip(salt).for_each(|(s, b)| *s = b);
            let file = parse(&encode(username, &password, hash_type, iterations, &salt12));
            // Not a NUL: HMAC pads its key with zeros, so under $7$ a
            // password and the same with NULs appended are one key.
            let mut wrong = password.clone();
            wrong.push(b'x');
            file.verify(username, &password) && !file.verify(username, &wrong)
        }
        quickcheck(300).quickcheck(prop as fn(String, Vec<u8>, bool, u8, Vec<u8>) -> bool);
    }
}

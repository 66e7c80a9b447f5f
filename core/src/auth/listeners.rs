//! One [`FilePolicy`] per listener (`per_listener_settings true`, or
//! `listener_allow_anonymous`) or one for all, built from a parsed
//! configuration and the text of the files it names.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;

use super::FilePolicy;
use super::acl::{AclError, AclFile};
use super::password_file::{PasswordFile, PasswordFileError, Verifier};
use crate::conf::{BrokerConf, ListenerAuth};
use crate::peer::ListenerId;
use crate::policy::{AccessPolicy, AuthDecision, ClientInfo, FilterAccess};
use crate::topic::{TopicFilter, TopicName};

/// Why the access files of a configuration cannot be used. Each variant
/// names the file, and the line where there is one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// The file could not be read.
    #[error("Unable to open {path}: {reason}")]
    Read {
        /// The path, as configured.
        path: String,
        /// What the file system said.
        reason: String,
    },
    /// A line of a password file is malformed.
    #[error(transparent)]
    Passwords(#[from] PasswordFileError),
    /// A line of an ACL file is malformed.
    #[error(transparent)]
    Acl(#[from] AclError),
}

/// The access policy of every listener: a client is judged by the
/// [`FilePolicy`] of the listener it connected on
/// ([`ClientInfo::listener`]). Without `per_listener_settings` every
/// listener shares one policy. Cloning is cheap: the files are shared.
#[derive(Debug, Clone, Default)]
pub struct ListenerPolicies {
    /// Per listener, under `per_listener_settings`.
    listeners: BTreeMap<ListenerId, FilePolicy>,
    /// Every listener's policy without `per_listener_settings`; under it,
    /// the policy of a listener the configuration does not know (none
    /// such is opened), which lets nobody in.
    other: FilePolicy,
}

impl ListenerPolicies {
    /// The same policy on every listener.
    pub fn uniform(policy: FilePolicy) -> Self {
        Self { listeners: BTreeMap::new(), other: policy }
    }

    /// A policy per listener; a listener not in `listeners` lets nobody in.
    pub fn per_listener(listeners: BTreeMap<ListenerId, FilePolicy>) -> Self {
        Self { listeners, other: FilePolicy::new(None, None, false) }
    }

    /// Builds the policies `conf` describes, reading each password and ACL
    /// file once through `read` (the core reads no files). Returns them
    /// with the ACL files' warnings, one line each.
    pub fn load(
        conf: &BrokerConf,
        read: &mut dyn FnMut(&str) -> Result<String, String>,
    ) -> Result<(Self, Vec<String>), PolicyError> {
        let mut files = Files::default();
        if conf.uniform_auth() {
            let policy = files.policy(&conf.auth(0), read)?;
            return Ok((Self::uniform(policy), files.warnings));
        }
        let mut listeners = BTreeMap::new();
        for index in 0..conf.listeners.len() {
            let id = ListenerId::at(index);
            listeners.insert(id, files.policy(&conf.auth(index), read)?);
        }
        Ok((Self::per_listener(listeners), files.warnings))
    }

    /// The policy of `listener`.
    pub fn get(&self, listener: ListenerId) -> &FilePolicy {
        self.listeners.get(&listener).unwrap_or(&self.other)
    }

    /// The password check of `username` on `listener`, to run off the
    /// broker's thread; `None` if that listener has no password file (the
    /// policy then never defers).
    pub fn verifier(&self, listener: ListenerId, username: &str) -> Option<Verifier> {
        self.get(listener).passwords().map(|p| p.verifier(username))
    }

    /// After a reload from `previous` to `self`: whether a connected client
    /// stays (see [`FilePolicy::keeps`]).
    pub fn keeps(&self, previous: &Self, client: ClientInfo<'_>) -> bool {
        self.get(client.listener).keeps(previous.get(client.listener), client)
    }
}

impl AccessPolicy for ListenerPolicies {
    fn authenticate(&self, client: ClientInfo<'_>, password: Option<&Bytes>) -> AuthDecision {
        self.get(client.listener).authenticate(client, password)
    }

    fn filter_access(&self, client: ClientInfo<'_>, filter: &TopicFilter) -> FilterAccess {
        self.get(client.listener).filter_access(client, filter)
    }

    fn may_read(&self, client: ClientInfo<'_>, topic: &TopicName) -> bool {
        self.get(client.listener).may_read(client, topic)
    }

    fn may_publish(&self, client: ClientInfo<'_>, topic: &TopicName) -> bool {
        self.get(client.listener).may_publish(client, topic)
    }

    fn checks_passwords(&self, listener: ListenerId) -> bool {
        self.get(listener).checks_passwords(listener)
    }
}

/// The files read so far, by path: listeners naming the same file share
/// one copy.
#[derive(Default)]
struct Files {
    passwords: BTreeMap<String, Arc<PasswordFile>>,
    acls: BTreeMap<String, Arc<AclFile>>,
    warnings: Vec<String>,
}

impl Files {
    fn policy(
        &mut self,
        auth: &ListenerAuth,
        read: &mut dyn FnMut(&str) -> Result<String, String>,
    ) -> Result<FilePolicy, PolicyError> {
        let passwords = match &auth.password_file {
            Some(path) => Some(self.passwords(path, read)?),
            None => None,
        };
        let acl = match &auth.acl_file {
            Some(path) => Some(self.acl(path, read)?),
            None => None,
        };
        Ok(FilePolicy::new(passwords, acl, auth.allow_anonymous))
    }

    fn passwords(
        &mut self,
        path: &str,
        read: &mut dyn FnMut(&str) -> Result<String, String>,
    ) -> Result<Arc<PasswordFile>, PolicyError> {
        if let Some(file) = self.passwords.get(path) {
            return Ok(file.clone());
        }
        let file = Arc::new(PasswordFile::parse(path, &text(path, read)?)?);
        self.passwords.insert(path.to_owned(), file.clone());
        Ok(file)
    }

    fn acl(
        &mut self,
        path: &str,
        read: &mut dyn FnMut(&str) -> Result<String, String>,
    ) -> Result<Arc<AclFile>, PolicyError> {
        if let Some(file) = self.acls.get(path) {
            return Ok(file.clone());
        }
        let file = Arc::new(AclFile::parse(path, &text(path, read)?)?);
        self.warnings.extend(file.warnings().iter().map(ToString::to_string));
        self.acls.insert(path.to_owned(), file.clone());
        Ok(file)
    }
}

fn text(path: &str, read: &mut dyn FnMut(&str) -> Result<String, String>) -> Result<String, PolicyError> {
    read(path).map_err(|reason| PolicyError::Read { path: path.to_owned(), reason })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::policy::Refusal;
    use crate::types::ClientId;

    /// `alice` / `secret1`, made by mosquitto_passwd 2.0.11.
    const ALICE: &str = "alice:$7$101$JloIa/qRz+9dv4QV$d6MaeLu/xMjxvjdNkyhKV2U6zb0hKsvpUH4JaH7aRs9gH1kRbNXaaWG1KEn26X6kB6u/yX7ogjdqB8r63zwmzA==\n";
    /// `bob` / `secret2`, a `$6$` line (`-H sha512`).
    const BOB: &str = "bob:$6$TlpbRIpQJ9t00qCm$t41bUqTr2AdAkROKD0pD3WkhA1aLTdswB76x3001+mz1TFvYGEPsKvuAvKxGIG9fdCdiCvocIQpAeDoaILqpig==\n";

    fn files(entries: &[(&str, String)]) -> impl FnMut(&str) -> Result<String, String> {
        let map: BTreeMap<String, String> = entries.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect();
        move |path: &str| map.get(path).cloned().ok_or_else(|| "No such file or directory".to_owned())
    }

    fn load(conf: &str, entries: &[(&str, String)]) -> Result<ListenerPolicies, PolicyError> {
        let conf = crate::conf::parse("test.conf", conf).unwrap();
        ListenerPolicies::load(&conf, &mut files(entries)).map(|(policies, _)| policies)
    }

    fn client<'a>(id: &'a ClientId, username: Option<&'a str>, listener: u16) -> ClientInfo<'a> {
        ClientInfo { client_id: id, username, listener: ListenerId(listener) }
    }

    const EXAMPLE: &str = "per_listener_settings true\n\
        listener 1883 127.0.0.1\nallow_anonymous true\n\
        listener 8884\npassword_file /etc/pw\nacl_file /etc/acl\nallow_anonymous false\n";

    #[test]
    fn each_listener_judges_by_its_own_settings() {
        let acl = "user alice\ntopic read a/#\n".to_owned();
        let policies = load(EXAMPLE, &[("/etc/pw", ALICE.to_owned()), ("/etc/acl", acl)]).unwrap();
        let id = ClientId::new("c");
        let topic = TopicFilter::new("b/c").unwrap();
        assert_eq!(policies.authenticate(client(&id, None, 0), None), AuthDecision::Allow);
        assert_eq!(policies.filter_access(client(&id, None, 0), &topic), FilterAccess::Whole);
        assert_eq!(policies.authenticate(client(&id, None, 1), None), AuthDecision::Refuse(Refusal::NotAuthorized));
        assert_eq!(policies.authenticate(client(&id, Some("alice"), 1), None), AuthDecision::Defer);
        assert_eq!(policies.filter_access(client(&id, Some("alice"), 1), &topic), FilterAccess::Denied);
        assert!(policies.verifier(ListenerId(0), "alice").is_none());
        assert!(policies.verifier(ListenerId(1), "alice").unwrap().verify(b"secret1"));
        // A listener the configuration does not know lets nobody in.
        assert_eq!(policies.authenticate(client(&id, None, 7), None), AuthDecision::Refuse(Refusal::NotAuthorized));
    }

    #[test]
    fn without_per_listener_settings_one_policy_serves_every_listener() {
        let conf = "listener 1883\nlistener 1884\npassword_file /etc/pw\n";
        let policies = load(conf, &[("/etc/pw", ALICE.to_owned())]).unwrap();
        let id = ClientId::new("c");
        for listener in [0, 1, 9] {
            assert_eq!(policies.authenticate(client(&id, Some("alice"), listener), None), AuthDecision::Defer);
            // allow_anonymous defaults to false once a listener is configured.
            let refused = AuthDecision::Refuse(Refusal::NotAuthorized);
            assert_eq!(policies.authenticate(client(&id, None, listener), None), refused);
        }
    }

    #[test]
    fn listener_allow_anonymous_judges_its_listener_with_the_global_files() {
        let conf = "listener 1883
listener 1884
listener_allow_anonymous true
password_file /etc/pw
";
        let policies = load(conf, &[("/etc/pw", ALICE.to_owned())]).unwrap();
        let id = ClientId::new("c");
        let refused = AuthDecision::Refuse(Refusal::NotAuthorized);
        assert_eq!(policies.authenticate(client(&id, None, 0), None), refused);
        assert_eq!(policies.authenticate(client(&id, None, 1), None), AuthDecision::Allow);
        // Both listeners check user names against the global file.
        for listener in [0, 1] {
            assert_eq!(policies.authenticate(client(&id, Some("alice"), listener), None), AuthDecision::Defer);
        }
    }

    #[test]
    fn a_user_name_without_a_password_file_counts_as_anonymous() {
        let id = ClientId::new("c");
        let open = load("listener 1883\nallow_anonymous true\n", &[]).unwrap();
        assert_eq!(open.authenticate(client(&id, Some("x"), 0), None), AuthDecision::Allow);
        let closed = load("listener 1883\n", &[]).unwrap();
        let refused = AuthDecision::Refuse(Refusal::NotAuthorized);
        assert_eq!(closed.authenticate(client(&id, Some("x"), 0), None), refused);
    }

    #[test]
    fn errors_name_the_file_and_line() {
        let missing = load(EXAMPLE, &[]).unwrap_err();
        assert_eq!(missing.to_string(), "Unable to open /etc/pw: No such file or directory");
        let bad = load(EXAMPLE, &[("/etc/pw", ALICE.to_owned()), ("/etc/acl", "user a\ntopic bogus x\n".to_owned())]);
        assert_eq!(bad.unwrap_err().to_string(), "/etc/acl:2: Invalid topic access type \"bogus\" in acl_file");
        let bad = load(EXAMPLE, &[("/etc/pw", format!("{ALICE}bob\n")), ("/etc/acl", String::new())]);
        assert_eq!(bad.unwrap_err().to_string(), "/etc/pw:2: missing ':' between user name and password hash");
    }

    #[test]
    fn a_reload_keeps_users_whose_line_is_unchanged() {
        let conf = "listener 1883\npassword_file /etc/pw\nallow_anonymous true\n";
        let before = load(conf, &[("/etc/pw", format!("{ALICE}{BOB}"))]).unwrap();
        let id = ClientId::new("c");
        let alice = client(&id, Some("alice"), 0);
        let bob = client(&id, Some("bob"), 0);
        let same = load(conf, &[("/etc/pw", format!("{BOB}{ALICE}"))]).unwrap();
        assert!(same.keeps(&before, alice) && same.keeps(&before, bob));
        let without_bob = load(conf, &[("/etc/pw", ALICE.to_owned())]).unwrap();
        assert!(without_bob.keeps(&before, alice));
        assert!(!without_bob.keeps(&before, bob));
        let changed = BOB.replace("TlpbRIpQJ9t00qCm", "TlpbRIpQJ9t00qCn");
        let bob_changed = load(conf, &[("/etc/pw", format!("{ALICE}{changed}"))]).unwrap();
        assert!(!bob_changed.keeps(&before, bob));
        // Anonymous clients follow allow_anonymous.
        assert!(same.keeps(&before, client(&id, None, 0)));
        let closed = load("listener 1883\npassword_file /etc/pw\n", &[("/etc/pw", ALICE.to_owned())]).unwrap();
        assert!(!closed.keeps(&before, client(&id, None, 0)));
        // Users never checked against a file cannot be kept once there is one.
        let open = load("listener 1883\nallow_anonymous true\n", &[]).unwrap();
        assert!(open.keeps(&before, alice));
        assert!(!before.keeps(&open, alice));
    }
}

//! Mosquitto's authentication and authorisation files, parsed from text.
//!
//! The core reads no files: a runtime reads each file and hands its text
//! to the parser here; the parsed result answers the questions that
//! [`AccessPolicy`] asks.

pub mod acl;
mod listeners;
pub mod password_file;

use std::sync::Arc;

use bytes::Bytes;

use crate::ListenerId;
use crate::policy::{AccessPolicy, AuthDecision, ClientInfo, FilterAccess, Refusal, is_sys_write_banned};
use crate::topic::{TopicFilter, TopicName};

use self::acl::AclFile;
use self::password_file::PasswordFile;

pub use self::listeners::{ListenerPolicies, PolicyError};

/// The policy of a broker (or of one listener, with
/// `per_listener_settings`) configured with `password_file`, `acl_file`
/// and `allow_anonymous`, as Mosquitto 2 applies them:
/// - a client without a user name is accepted only with `allow_anonymous`;
/// - with a password file, a client with a user name is checked against
///   it (deferred to the runtime: the hash is deliberately slow), and a
///   wrong password or an unknown user is refused with CONNACK 0x05 as
///   Mosquitto 2 does;
/// - without a password file a user name proves nothing: the client is
///   accepted only with `allow_anonymous`, refused with 0x05 otherwise
///   (Mosquitto 2.0 refuses it the same way);
/// - with an ACL file, PUBLISH needs write access (refused ones are
///   acknowledged and dropped) and each SUBSCRIBE filter needs read access
///   to every topic it can match (refused ones get 0x80, going beyond
///   Mosquitto 2.0, which accepts the subscription and filters delivery);
/// - without an ACL file, everyone may do everything but write `$SYS`.
#[derive(Debug, Clone)]
pub struct FilePolicy {
    passwords: Option<Arc<PasswordFile>>,
    acl: Option<Arc<AclFile>>,
    allow_anonymous: bool,
}

impl Default for FilePolicy {
    /// No files, anonymous clients allowed: Mosquitto without a
    /// configuration.
    fn default() -> Self {
        Self::new(None, None, true)
    }
}

impl FilePolicy {
    /// A policy from the files given (either may be absent).
    pub fn new(passwords: Option<Arc<PasswordFile>>, acl: Option<Arc<AclFile>>, allow_anonymous: bool) -> Self {
        Self { passwords, acl, allow_anonymous }
    }

    /// The password file, for the runtime's deferred checks.
    pub fn passwords(&self) -> Option<&Arc<PasswordFile>> {
        self.passwords.as_ref()
    }

    /// Whether clients without a user name are accepted.
    pub fn allow_anonymous(&self) -> bool {
        self.allow_anonymous
    }

    /// After a reload from `previous` to `self`: whether a client accepted
    /// under `previous` stays connected. The broker keeps no passwords, so
    /// a user whose line of the password file changed (or who had not been
    /// checked against a file at all) cannot be checked again: like a user
    /// who was removed, it is disconnected, and its next CONNECT is checked
    /// against the new file. Anonymous clients stay if `allow_anonymous`
    /// still lets them in.
    pub fn keeps(&self, previous: &Self, client: ClientInfo<'_>) -> bool {
        match (client.username, &self.passwords) {
            (Some(username), Some(passwords)) => {
                let entry = passwords.entry(username);
                entry.is_some() && previous.passwords.as_ref().is_some_and(|old| old.entry(username) == entry)
            }
            _ => self.allow_anonymous,
        }
    }
}

impl AccessPolicy for FilePolicy {
    fn authenticate(&self, client: ClientInfo<'_>, _: Option<&Bytes>) -> AuthDecision {
        match (&self.passwords, client.username) {
            (Some(_), Some(_)) => AuthDecision::Defer,
            _ if self.allow_anonymous => AuthDecision::Allow,
            _ => AuthDecision::Refuse(Refusal::NotAuthorized),
        }
    }

    fn filter_access(&self, client: ClientInfo<'_>, filter: &TopicFilter) -> FilterAccess {
        match &self.acl {
            Some(acl) => acl.filter_access(client.client_id.as_str(), client.username, filter),
            None => FilterAccess::Whole,
        }
    }

    fn may_read(&self, client: ClientInfo<'_>, topic: &TopicName) -> bool {
        self.acl.as_ref().is_none_or(|acl| acl.may_read(client.client_id.as_str(), client.username, topic))
    }

    fn may_publish(&self, client: ClientInfo<'_>, topic: &TopicName) -> bool {
        !is_sys_write_banned(topic)
            && self.acl.as_ref().is_none_or(|acl| acl.may_write(client.client_id.as_str(), client.username, topic))
    }

    fn checks_passwords(&self, _: ListenerId) -> bool {
        self.passwords.is_some()
    }
}

//! Mosquitto's authentication and authorisation files, parsed from text.
//!
//! The core reads no files: a runtime reads each file and hands its text
//! to the parser here; the parsed result answers the questions that
//! [`AccessPolicy`](crate::policy::AccessPolicy) asks.

pub mod acl;
pub mod password_file;

use std::sync::Arc;

use bytes::Bytes;

use crate::policy::{AccessPolicy, AuthDecision, ClientInfo, is_sys_topic};
use crate::topic::{TopicFilter, TopicName};

use self::acl::AclFile;
use self::password_file::PasswordFile;

/// The policy of a broker configured with `password_file` and `acl_file`,
/// as Mosquitto applies them:
/// - with a password file, a client with a user name is checked against
///   it (deferred to the runtime: the hash is deliberately slow), and a
///   wrong password is refused with CONNACK 0x05 as Mosquitto 2 does;
///   clients without a user name get as far as `allow_anonymous` lets them;
/// - with an ACL file, PUBLISH needs write access (refused ones are
///   acknowledged and dropped) and each SUBSCRIBE filter needs read access
///   to every topic it can match (refused ones get 0x80, going beyond
///   Mosquitto 2.0, which accepts the subscription and filters delivery);
/// - without either file, everyone may do everything but write `$SYS`.
#[derive(Debug, Clone, Default)]
pub struct FilePolicy {
    passwords: Option<Arc<PasswordFile>>,
    acl: Option<Arc<AclFile>>,
}

impl FilePolicy {
    /// A policy from the files given (either may be absent).
    pub fn new(passwords: Option<Arc<PasswordFile>>, acl: Option<Arc<AclFile>>) -> Self {
        Self { passwords, acl }
    }

    /// The password file, for the runtime's deferred checks.
    pub fn passwords(&self) -> Option<&Arc<PasswordFile>> {
        self.passwords.as_ref()
    }
}

impl AccessPolicy for FilePolicy {
    fn authenticate(&self, client: ClientInfo<'_>, _: Option<&Bytes>) -> AuthDecision {
        match (&self.passwords, client.username) {
            (Some(_), Some(_)) => AuthDecision::Defer,
            _ => AuthDecision::Allow,
        }
    }

    fn may_subscribe(&self, client: ClientInfo<'_>, filter: &TopicFilter) -> bool {
        self.acl.as_ref().is_none_or(|acl| acl.may_subscribe(client.client_id.as_str(), client.username, filter))
    }

    fn may_publish(&self, client: ClientInfo<'_>, topic: &TopicName) -> bool {
        !is_sys_topic(topic)
            && self.acl.as_ref().is_none_or(|acl| acl.may_write(client.client_id.as_str(), client.username, topic))
    }
}

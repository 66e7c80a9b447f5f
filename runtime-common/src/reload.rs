//! Reloading the configuration on SIGHUP, and the signals a broker obeys.
//!
//! On SIGHUP Mosquitto logs `Reloading config.`, reads its configuration
//! file again and applies the security settings to everyone connected.
//! Culex does the same for what decides access: `password_file`,
//! `acl_file` and `allow_anonymous` (per listener with
//! `per_listener_settings`). The files are read on a blocking thread
//! ([`ReloadSource::load`]); the broker task then swaps the policy in one
//! step ([`Event::Reload`](crate::Event::Reload)), so no client is dropped
//! merely because of a reload. A file that does not parse leaves the
//! policy in force as it was, and the log names the file, line and reason.
//! Bridges are reloaded too, which Mosquitto cannot do: a bridge removed
//! or changed is stopped, a changed or new one started, the others go on
//! (see [`Server::reload_bridges`](culex_core::server::Server::reload_bridges)).
//! Log files (`log_dest file`) are opened again first, as Mosquitto does,
//! so that logrotate can move them away. Other settings (listeners, limits,
//! Redis, where the log goes) need a restart.

use culex_core::auth::ListenerPolicies;
use culex_core::conf::{BridgeConf, BrokerConf, CliOptions};
use tracing::{error, info, warn};

use crate::{notify, settings};

/// What a signal asks of a running broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// SIGTERM, SIGINT: close every client and stop.
    Shutdown,
    /// SIGHUP: reopen the log files and read the access settings again.
    Reload,
    /// SIGUSR1: say how the store stands (Mosquitto saves its database).
    Report,
}

/// The signals a runtime listens to, as one source.
pub trait Signals {
    /// The next signal; never completes if none come.
    fn next(&mut self) -> impl Future<Output = Signal>;
}

/// Obeys `signals` until a shutdown, one signal at a time and in order:
/// `reload` for SIGHUP, `report` for SIGUSR1 (each hands the broker task
/// its event without waiting for it).
pub async fn obey(mut signals: impl Signals, mut reload: impl AsyncFnMut(), mut report: impl AsyncFnMut()) {
    loop {
        match signals.next().await {
            Signal::Reload => reload().await,
            Signal::Report => report().await,
            Signal::Shutdown => return,
        }
    }
}

/// Only a shutdown, when `F` completes (embedding, tests).
#[derive(Debug)]
pub struct ShutdownOn<F>(Option<F>);

impl<F> ShutdownOn<F> {
    /// Shutdown once `shutdown` completes.
    pub fn new(shutdown: F) -> Self {
        Self(Some(shutdown))
    }
}

impl<F: Future<Output = ()> + Unpin> Signals for ShutdownOn<F> {
    async fn next(&mut self) -> Signal {
        if let Some(shutdown) = self.0.as_mut() {
            shutdown.await;
            self.0 = None;
        }
        Signal::Shutdown
    }
}

/// What a reload applies.
#[derive(Debug, Clone)]
pub struct Reloaded {
    /// The access policies.
    pub policies: ListenerPolicies,
    /// The bridges, in file order.
    pub bridges: Vec<BridgeConf>,
}

/// What a reload reads again: the command line the broker started with,
/// and the listeners it opened (per-listener policies are matched to them
/// by position).
#[derive(Debug, Clone, Default)]
pub struct ReloadSource {
    options: CliOptions,
    listeners: Vec<(u16, Option<String>)>,
}

impl ReloadSource {
    /// A reload of the configuration `options` name, for a broker serving
    /// the listeners of `started`.
    pub fn new(options: CliOptions, started: &BrokerConf) -> Self {
        Self { options, listeners: listeners_of(started) }
    }

    /// Reads the configuration file and the password and ACL files it names
    /// now, logging `Reloading config.` first. Blocking: run it on a
    /// blocking thread. `None` when there is nothing to apply: no
    /// configuration file, or an error, logged with its file, line and
    /// reason (the broker keeps the policy in force).
    ///
    /// The service manager is told a reload started
    /// ([`notify::reloading`]); when there is nothing to apply, also that
    /// it is over ([`notify::ready`]). Otherwise the broker task says so
    /// once it has applied what this returns.
    pub fn load(&self) -> Option<Reloaded> {
        // As Mosquitto: log files are opened again (logrotate moved them).
        crate::logging::reopen_files();
        info!("Reloading config.");
        notify::reloading("Reloading the configuration.");
        if self.options.config_file.is_none() {
            info!("No configuration file: nothing to reload.");
            notify::ready("No configuration file: nothing reloaded.");
            return None;
        }
        match self.try_load() {
            Ok((reloaded, warnings)) => {
                for warning in warnings {
                    warn!("{warning}");
                }
                // "Password and ACL files reloaded." is logged by the broker
                // loop once the new policy is in force, not here.
                Some(reloaded)
            }
            Err(message) => {
                error!("{message}");
                error!("Reload failed: the previous access settings stay in force.");
                notify::ready("Reload failed: the previous settings stay in force (see the log).");
                None
            }
        }
    }

    /// The policies of the configuration as it is now, with its warnings.
    /// It goes through the same checks as at start (so a configuration
    /// that asks for protection Culex cannot give is refused here too).
    fn try_load(&self) -> Result<(Reloaded, Vec<String>), String> {
        let conf = settings::read_conf(&self.options)?;
        if !conf.uniform_auth() && listeners_of(&conf) != self.listeners {
            return Err("Error: the listeners of the configuration changed; with per_listener_settings (or \
                        listener_allow_anonymous) their access settings apply only after a restart."
                .to_owned());
        }
        let settings = settings::from_conf(conf)?;
        let warnings = settings.notices.into_iter().filter(|n| n.starts_with("Warning: ")).collect();
        Ok((Reloaded { policies: settings.policy, bridges: settings.bridges }, warnings))
    }
}

fn listeners_of(conf: &BrokerConf) -> Vec<(u16, Option<String>)> {
    conf.listeners.iter().map(|l| (l.port, l.address.clone())).collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use culex_core::policy::{AccessPolicy, AuthDecision, ClientInfo, Refusal};
    use culex_core::{ClientId, ListenerId};

    fn source(dir: &std::path::Path, conf: &str) -> ReloadSource {
        let path = dir.join("culex.conf");
        std::fs::write(&path, conf).unwrap();
        let options = CliOptions { config_file: Some(path.to_string_lossy().into_owned()), ..CliOptions::default() };
        let started = settings::read_conf(&options).unwrap();
        ReloadSource::new(options, &started)
    }

    fn anonymous(policies: &ListenerPolicies, listener: u16) -> AuthDecision {
        let id = ClientId::new("c");
        policies.authenticate(ClientInfo { client_id: &id, username: None, listener: ListenerId(listener) }, None)
    }

    #[test]
    fn a_reload_reads_the_files_again_and_keeps_the_old_policy_on_errors() {
        let dir = tempdir("files");
        let acl = dir.join("acl");
        std::fs::write(&acl, "topic read a/#\n").unwrap();
        let conf = format!("listener 1883\nallow_anonymous true\nacl_file {}\n", acl.display());
        let source = source(&dir, &conf);
        assert!(source.load().is_some());
        std::fs::write(&acl, "topic bogus a/#\n").unwrap();
        assert!(source.load().is_none());
        std::fs::remove_file(&acl).unwrap();
        assert!(source.load().is_none());
        std::fs::write(dir.join("culex.conf"), "listener 1883\nallow_anonymous false\n").unwrap();
        let policies = source.load().unwrap().policies;
        assert_eq!(anonymous(&policies, 0), AuthDecision::Refuse(Refusal::NotAuthorized));
    }

    #[test]
    fn per_listener_policies_are_reloaded_only_for_the_same_listeners() {
        let dir = tempdir("listeners");
        let conf = "per_listener_settings true\nlistener 1883\nallow_anonymous true\nlistener 1884\n";
        let source = source(&dir, conf);
        let policies = source.load().unwrap().policies;
        assert_eq!(anonymous(&policies, 0), AuthDecision::Allow);
        assert_eq!(anonymous(&policies, 1), AuthDecision::Refuse(Refusal::NotAuthorized));
        std::fs::write(dir.join("culex.conf"), "per_listener_settings true\nlistener 1883\n").unwrap();
        assert!(source.load().is_none());
    }

    #[test]
    fn listener_allow_anonymous_is_reloaded_for_the_same_listeners() {
        let dir = tempdir("listener-anonymous");
        let conf = "listener 1883\nlistener 1884\nlistener_allow_anonymous true\n";
        let source = source(&dir, conf);
        let policies = source.load().unwrap().policies;
        assert_eq!(anonymous(&policies, 0), AuthDecision::Refuse(Refusal::NotAuthorized));
        assert_eq!(anonymous(&policies, 1), AuthDecision::Allow);
        std::fs::write(dir.join("culex.conf"), "listener 1883\nlistener 1884\nlistener_allow_anonymous false\n")
            .unwrap();
        assert_eq!(anonymous(&source.load().unwrap().policies, 1), AuthDecision::Refuse(Refusal::NotAuthorized));
        std::fs::write(dir.join("culex.conf"), "listener 1884\nlistener_allow_anonymous true\n").unwrap();
        assert!(source.load().is_none(), "the listeners changed");
    }

    #[test]
    fn a_reload_refuses_what_start_up_refuses() {
        let dir = tempdir("unprotected");
        let source = source(&dir, "listener 1883\nallow_anonymous true\n");
        std::fs::write(dir.join("culex.conf"), "listener 1883\nallow_anonymous true\npsk_file /etc/psk\n").unwrap();
        assert!(source.load().is_none());
    }

    #[test]
    fn without_a_configuration_file_there_is_nothing_to_reload() {
        assert!(ReloadSource::default().load().is_none());
    }

    /// A fresh directory under the system's temporary directory.
    fn tempdir(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("culex-reload-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}

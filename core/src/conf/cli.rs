//! The `mosquitto` command line: `-c`, `-p`, `-v`, `-h`, `--version`.
//!
//! Options are separate words, as Mosquitto takes them (`-p 1884`, not
//! `-p1884` or `--port=1884`), and are read in order: `--help` and
//! `--version` answer at once, the first bad option stops the parse.

use super::{BrokerConf, ListenerConf, LogTypes, Warning};

/// How many `-p` options Mosquitto 2 accepts (its `CMD_PORT_LIMIT`).
pub const MAX_CLI_PORTS: usize = 10;

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CliCommand {
    /// Run the broker with these options.
    Run(CliOptions),
    /// Print this help text (to stdout) and exit successfully.
    Help(String),
    /// Print this version line and exit successfully.
    Version(String),
}

/// The options of a broker run.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CliOptions {
    /// `-c FILE`: the configuration file to read.
    pub config_file: Option<String>,
    /// `-p PORT`, in the order given (duplicates dropped).
    pub ports: Vec<u16>,
    /// `-v`: log everything.
    pub verbose: bool,
}

/// A command line that cannot be run. Each message says what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CliError {
    /// An option that takes a value came last.
    #[error("{option} argument given, but no {what} specified. See --help.")]
    MissingValue {
        /// The option, as written.
        option: String,
        /// What should have followed it.
        what: &'static str,
    },
    /// `-p` with something other than 1 to 65535.
    #[error("Invalid port specified ({value}): expected an integer from 1 to 65535.")]
    InvalidPort {
        /// The value, as written.
        value: String,
    },
    /// More than [`MAX_CLI_PORTS`] `-p` options.
    #[error("Only {max} ports can be specified on the command line.", max = MAX_CLI_PORTS)]
    TooManyPorts,
    /// `-c` given twice.
    #[error(
        "-c given twice ({first} and {second}): Culex reads one configuration file; use include_dir in it for more."
    )]
    DuplicateConfigFile {
        /// The first file.
        first: String,
        /// The second file.
        second: String,
    },
    /// `-d` / `--daemon`: Culex does not fork into the background.
    #[error(
        "{option}: Culex does not run as a daemon. Run it in the foreground under a service manager (systemd, \
         runit, Docker, ...), which handles the background, restarts and logs."
    )]
    Daemon {
        /// The option, as written.
        option: String,
    },
    /// An option Culex does not know.
    #[error("Unknown option '{option}'. See --help.")]
    UnknownOption {
        /// The option, as written.
        option: String,
    },
}

/// Parses the command line. `args` is the whole of it, program name first,
/// as [`std::env::args`] yields it; the program name is only used in the
/// help and version texts.
pub fn parse_args(args: impl IntoIterator<Item = String>) -> Result<CliCommand, CliError> {
    let mut args = args.into_iter();
    let program = program_name(args.next().as_deref());
    let mut options = CliOptions::default();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "-c" | "--config-file" => {
                let Some(file) = args.next() else {
                    return Err(CliError::MissingValue { option: arg, what: "config file" });
                };
                if let Some(first) = options.config_file.take() {
                    return Err(CliError::DuplicateConfigFile { first, second: file });
                }
                options.config_file = Some(file);
            }
            "-p" | "--port" => {
                let Some(value) = args.next() else {
                    return Err(CliError::MissingValue { option: arg, what: "port" });
                };
                let port = match value.parse::<u16>() {
                    Ok(port) if port != 0 => port,
                    _ => return Err(CliError::InvalidPort { value }),
                };
                if options.ports.len() == MAX_CLI_PORTS {
                    return Err(CliError::TooManyPorts);
                }
                if !options.ports.contains(&port) {
                    options.ports.push(port);
                }
            }
            "-v" | "--verbose" => options.verbose = true,
            "-d" | "--daemon" => return Err(CliError::Daemon { option: arg }),
            "-h" | "--help" => return Ok(CliCommand::Help(help_text(&program))),
            "--version" => return Ok(CliCommand::Version(version_text(&program))),
            _ => return Err(CliError::UnknownOption { option: arg }),
        }
    }
    Ok(CliCommand::Run(options))
}

/// The file name of `argv[0]`, or `culex`.
fn program_name(argv0: Option<&str>) -> String {
    argv0.and_then(|path| path.rsplit(['/', '\\']).next()).filter(|name| !name.is_empty()).unwrap_or("culex").to_owned()
}

/// The `--version` line.
fn version_text(program: &str) -> String {
    format!("{program} version {}\n", env!("CARGO_PKG_VERSION"))
}

/// The `--help` text: every option, and where the configuration keys are
/// described.
pub fn help_text(program: &str) -> String {
    format!(
        "{program} version {version}

Culex is an MQTT 3.1/3.1.1 broker that reads Mosquitto's configuration.

Usage: {program} [-c config_file] [-p port]... [-v]
       {program} -h | --help
       {program} --version

Options:
  -c, --config-file FILE  Read the configuration from FILE (mosquitto.conf
                          syntax). Without it the defaults apply: port 1883
                          on 127.0.0.1 and ::1 only (local only mode).
  -p, --port PORT         Listen on PORT (1-65535). May be given up to {max_ports}
                          times. If the configuration opens no listener, these
                          ports replace 1883, still on 127.0.0.1 and ::1 only;
                          otherwise each opens a listener on all addresses in
                          addition to the configured ones.
  -v, --verbose           Log everything (log_type all), overriding the
                          log_type lines of the configuration.
  -h, --help              Print this help and exit.
      --version           Print the version and exit.
  -d, --daemon            Not supported: run {program} in the foreground under
                          a service manager (systemd, runit, Docker, ...).

Every configuration key (listener, allow_anonymous, max_inflight_messages,
redis_host, redis_auth, ...) is described in the configuration reference,
docs/config.md, linked from the README.
",
        version = env!("CARGO_PKG_VERSION"),
        max_ports = MAX_CLI_PORTS,
    )
}

/// Where command-line warnings point.
const COMMAND_LINE: &str = "command line";

impl CliOptions {
    /// Lets the command line override the configuration, as Mosquitto 2
    /// does:
    ///
    /// - `-v` sets the log types to all (mosquitto(8): "This overrides any
    ///   logging options given in the configuration file").
    /// - `-p` **in local only mode** (the configuration opens no listener,
    ///   or there is none): the ports replace 1883 on the loopback
    ///   listeners, so `culex -p 1884` serves `127.0.0.1:1884` and
    ///   `[::1]:1884` only, with anonymous clients allowed. This is Mosquitto
    ///   2.0's `listeners__start_local_only`, which puts
    ///   every `-p` port on 127.0.0.1 and ::1.
    /// - `-p` **with listeners in the configuration**: each port opens an
    ///   extra listener on all addresses, in addition to the configured
    ///   ones, as mosquitto(8) documents ("This acts in addition to the
    ///   port setting in the config file ... This socket will be bound to
    ///   all network interfaces"). Mosquitto 2.0's code ignores `-p` in
    ///   this case; Culex follows the manual rather than drop an option
    ///   silently. A port already served on all addresses is not opened
    ///   twice (with a warning). `allow_anonymous` keeps the
    ///   configuration's value (false unless set).
    pub fn apply_to(&self, conf: &mut BrokerConf) {
        if self.verbose {
            conf.log.types = LogTypes::all();
        }
        if self.ports.is_empty() {
            return;
        }
        if conf.local_only {
            let loopback = std::mem::take(&mut conf.listeners);
            conf.listeners = self
                .ports
                .iter()
                .flat_map(|&port| loopback.iter().map(move |listener| ListenerConf { port, ..listener.clone() }))
                .collect();
        } else {
            for &port in &self.ports {
                if conf.listeners.iter().any(|l| l.port == port && l.address.is_none()) {
                    conf.warnings.push(Warning {
                        file: COMMAND_LINE.to_owned(),
                        line: 0,
                        key: "-p".to_owned(),
                        message: format!("port {port} is already a listener of the configuration; not opened twice"),
                    });
                } else {
                    conf.listeners.push(ListenerConf::new(port));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use quickcheck::{Gen, QuickCheck};

    use super::*;
    use crate::ListenerId;
    use crate::conf::{ListenerProtocol, parse};

    fn args(words: &[&str]) -> Vec<String> {
        std::iter::once("culex").chain(words.iter().copied()).map(str::to_owned).collect()
    }

    fn run(words: &[&str]) -> CliOptions {
        match parse_args(args(words)) {
            Ok(CliCommand::Run(options)) => options,
            other => panic!("expected Run, got {other:?}"),
        }
    }

    fn error(words: &[&str]) -> CliError {
        match parse_args(args(words)) {
            Err(e) => e,
            other => panic!("expected an error, got {other:?}"),
        }
    }

    fn listener(port: u16, address: Option<&str>) -> ListenerConf {
        ListenerConf { address: address.map(str::to_owned), ..ListenerConf::new(port) }
    }

    #[test]
    fn no_options_run_with_defaults() {
        assert_eq!(run(&[]), CliOptions::default());
        assert_eq!(parse_args(Vec::new()).unwrap(), CliCommand::Run(CliOptions::default()));
    }

    #[test]
    fn config_file_short_and_long() {
        assert_eq!(run(&["-c", "/etc/m.conf"]).config_file.as_deref(), Some("/etc/m.conf"));
        assert_eq!(run(&["--config-file", "a b.conf"]).config_file.as_deref(), Some("a b.conf"));
    }

    #[test]
    fn every_option_together() {
        let options = run(&["-v", "-p", "1884", "--port", "1885", "-c", "m.conf", "--verbose"]);
        assert_eq!(
            options,
            CliOptions { config_file: Some("m.conf".to_owned()), ports: vec![1884, 1885], verbose: true }
        );
    }

    #[test]
    fn port_repeats_up_to_ten_and_duplicates_collapse() {
        let mut words = Vec::new();
        for port in ["1", "2", "3", "4", "5", "6", "7", "8", "9", "10"] {
            words.extend(["-p", port]);
        }
        assert_eq!(run(&words).ports, (1..=10).collect::<Vec<u16>>());
        words.extend(["-p", "11"]);
        assert_eq!(error(&words), CliError::TooManyPorts);
        assert_eq!(error(&words).to_string(), "Only 10 ports can be specified on the command line.");
        assert_eq!(run(&["-p", "1883", "-p", "1883"]).ports, [1883]);
    }

    #[test]
    fn invalid_ports_are_refused() {
        for value in ["0", "65536", "-1", "http", ""] {
            assert_eq!(error(&["-p", value]), CliError::InvalidPort { value: value.to_owned() });
        }
        assert_eq!(error(&["-p", "x"]).to_string(), "Invalid port specified (x): expected an integer from 1 to 65535.");
    }

    #[test]
    fn option_without_its_value_is_refused() {
        assert_eq!(error(&["-p"]).to_string(), "-p argument given, but no port specified. See --help.");
        assert_eq!(
            error(&["--config-file"]).to_string(),
            "--config-file argument given, but no config file specified. See --help."
        );
    }

    #[test]
    fn config_file_twice_is_refused() {
        assert_eq!(
            error(&["-c", "a", "-c", "b"]),
            CliError::DuplicateConfigFile { first: "a".to_owned(), second: "b".to_owned() }
        );
    }

    #[test]
    fn daemon_is_refused_with_a_pointer_to_service_managers() {
        for option in ["-d", "--daemon"] {
            let e = error(&["-c", "m.conf", option]);
            assert_eq!(e, CliError::Daemon { option: option.to_owned() });
            assert!(e.to_string().contains("service manager"), "{e}");
        }
    }

    #[test]
    fn unknown_option_mentions_help() {
        let e = error(&["--tls-keylog", "f"]);
        assert_eq!(e.to_string(), "Unknown option '--tls-keylog'. See --help.");
        assert_eq!(error(&["m.conf"]), CliError::UnknownOption { option: "m.conf".to_owned() });
        assert_eq!(error(&["-p1883"]), CliError::UnknownOption { option: "-p1883".to_owned() });
    }

    #[test]
    fn help_documents_every_option_and_the_config_reference() {
        for words in [&["-h"][..], &["--help"], &["-v", "--help", "--bogus"]] {
            let Ok(CliCommand::Help(text)) = parse_args(args(words)) else {
                panic!("expected help for {words:?}");
            };
            for needle in [
                "-c, --config-file",
                "-p, --port",
                "-v, --verbose",
                "-h, --help",
                "--version",
                "-d, --daemon",
                "docs/config.md",
                "local only",
            ] {
                assert!(text.contains(needle), "help lacks {needle}:\n{text}");
            }
        }
    }

    #[test]
    fn help_and_version_use_the_program_name() {
        let argv = ["/usr/local/bin/culex-async-std", "--version"].map(str::to_owned);
        assert_eq!(
            parse_args(argv).unwrap(),
            CliCommand::Version(format!("culex-async-std version {}\n", env!("CARGO_PKG_VERSION")))
        );
        let Ok(CliCommand::Help(text)) = parse_args(["./culex".to_owned(), "-h".to_owned()]) else {
            panic!("expected help");
        };
        assert!(text.contains("Usage: culex [-c config_file]"));
    }

    #[test]
    fn verbose_sets_every_log_type_over_the_file() {
        let mut conf = parse("m.conf", "log_type error\n").unwrap();
        run(&["-v"]).apply_to(&mut conf);
        assert_eq!(conf.log.types, LogTypes::all());
    }

    #[test]
    fn ports_without_configured_listeners_replace_1883_on_loopback() {
        let mut conf = BrokerConf::default();
        run(&["-p", "1884", "-p", "1885"]).apply_to(&mut conf);
        assert_eq!(
            conf.listeners,
            vec![
                listener(1884, Some("127.0.0.1")),
                listener(1884, Some("::1")),
                listener(1885, Some("127.0.0.1")),
                listener(1885, Some("::1")),
            ]
        );
        assert!(conf.local_only);
        assert!(conf.core.allow_anonymous);
    }

    #[test]
    fn ports_in_local_only_mode_keep_the_listener_settings() {
        let mut conf = parse("m.conf", "max_connections 4\nprotocol websockets\n").unwrap();
        run(&["-p", "9001"]).apply_to(&mut conf);
        assert!(
            conf.listeners
                .iter()
                .all(|l| l.port == 9001 && l.max_connections == Some(4) && l.protocol == ListenerProtocol::WebSockets)
        );
        let limits = conf.listener_max_connections();
        assert_eq!(limits.into_iter().collect::<Vec<_>>(), [(ListenerId(0), 4), (ListenerId(1), 4)]);
    }

    #[test]
    fn ports_with_configured_listeners_add_listeners_on_all_addresses() {
        let mut conf = parse("m.conf", "listener 1883 10.0.0.1\nmax_connections 10\n").unwrap();
        run(&["-p", "1884"]).apply_to(&mut conf);
        assert_eq!(
            conf.listeners,
            vec![ListenerConf { max_connections: Some(10), ..listener(1883, Some("10.0.0.1")) }, listener(1884, None)]
        );
        assert!(!conf.core.allow_anonymous);
        assert_eq!(conf.listener_max_connections().into_iter().collect::<Vec<_>>(), [(ListenerId(0), 10)]);
    }

    #[test]
    fn port_already_configured_on_all_addresses_is_not_opened_twice() {
        let mut conf = parse("m.conf", "listener 1883\n").unwrap();
        run(&["-p", "1883"]).apply_to(&mut conf);
        assert_eq!(conf.listeners, vec![listener(1883, None)]);
        assert_eq!(
            conf.warnings.iter().map(ToString::to_string).collect::<Vec<_>>(),
            ["command line: -p: port 1883 is already a listener of the configuration; not opened twice"]
        );
    }

    #[test]
    fn no_cli_options_leave_the_configuration_alone() {
        let mut conf = parse("m.conf", "listener 1883\nlog_type debug\n").unwrap();
        let before = conf.clone();
        CliOptions::default().apply_to(&mut conf);
        assert_eq!(conf, before);
    }

    #[test]
    fn arbitrary_arguments_never_panic() {
        fn prop(words: Vec<String>, seeded: Vec<u8>) -> bool {
            let options = ["-c", "-p", "-v", "-d", "-h", "--port", "--version", "1883", "0"];
            let mut argv = vec!["culex".to_owned()];
            for (word, pick) in words.into_iter().zip(seeded) {
                argv.push(options.get(usize::from(pick)).map_or(word, |o| (*o).to_owned()));
            }
            if let Ok(CliCommand::Run(options)) = parse_args(argv) {
                let mut conf = BrokerConf::default();
                options.apply_to(&mut conf);
                return !conf.listeners.is_empty() && options.ports.len() <= MAX_CLI_PORTS;
            }
            true
        }
        QuickCheck::new().tests(2000).rng(Gen::new(32)).quickcheck(prop as fn(Vec<String>, Vec<u8>) -> bool);
    }
}

//! The step interpreter shared by every target. A target supplies a
//! [`Driver`]: how to open a connection, write bytes, let time pass and
//! read what the broker sent. The interpreter does the rest (variables,
//! placeholders, matching), so both targets read the same files the same
//! way.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use culex_core::codec::Packet;
use culex_spec::{Env, Expected, PacketSpec, Scenario, Step};

use crate::Outcome;
use crate::matching::{self, Vars};

/// Something a client saw.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Event {
    /// A packet from the broker.
    Packet(Packet),
    /// The broker closed the connection (or it failed).
    Closed,
    /// Bytes that do not decode as a packet a broker may send.
    Garbage(String),
}

impl Event {
    fn describe(&self) -> String {
        match self {
            Self::Packet(p) => culex_core::sim::describe(p),
            Self::Closed => "the connection closed".into(),
            Self::Garbage(e) => format!("undecodable bytes ({e})"),
        }
    }
}

/// How long to wait for an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Patience {
    /// As long as an expectation may take.
    Expect,
    /// A short while, for packets that may or may not come.
    Grace,
    /// Not at all: only what has already arrived.
    Now,
}

/// A target's side of a run.
pub(crate) trait Driver {
    /// Opens a connection for `client`.
    fn open(&mut self, client: &str) -> Result<(), String>;
    /// Writes `bytes` on `client`'s connection in one write.
    fn send(&mut self, client: &str, bytes: &[u8]);
    /// Sends `text` as a WebSocket text frame on `client`'s connection.
    fn send_text(&mut self, client: &str, text: &[u8]) -> Result<(), String>;
    /// Fails `client`'s connection from the client side.
    fn drop_connection(&mut self, client: &str);
    /// Lets `by` pass.
    fn wait(&mut self, by: Duration);
    /// The next event on `client`'s connection, or `None` if nothing came
    /// within `patience`.
    fn next_event(&mut self, client: &str, patience: Patience) -> Option<Event>;
    /// Checks that the presence store lists `client_id` (or does not).
    fn check_presence(&mut self, client_id: &str, online: bool) -> Result<(), String>;
    /// Shuts the broker down.
    fn shutdown(&mut self) -> Result<(), String>;
    /// Stops the broker as on SIGTERM (or, with `crash`, kills it) and
    /// starts it again on its store. Every connection is gone afterwards:
    /// the driver forgets them all.
    fn restart(&mut self, crash: bool) -> Result<(), String>;
}

/// Runs `scenario` through `driver`, with placeholders filled from `env`.
pub(crate) fn run(driver: &mut dyn Driver, scenario: &Scenario, env: &Env) -> Outcome {
    let mut run = Interpreter { driver, env, vars: Vars::new(), open: BTreeSet::new(), unread: BTreeMap::new() };
    for line in &scenario.steps {
        if let Err(message) = run.step(&line.step) {
            return Outcome::Fail { line: line.line, step: line.source.clone(), message };
        }
    }
    // Everything the broker sent must have been expected.
    for client in scenario.clients() {
        if !run.open.contains(client) {
            continue;
        }
        if let Some(event) = run.next(client, Patience::Now) {
            return Outcome::Fail {
                line: 0,
                step: "(end of scenario)".into(),
                message: format!("{client} got {} that no step expects", event.describe()),
            };
        }
    }
    Outcome::Pass
}

struct Interpreter<'a> {
    driver: &'a mut dyn Driver,
    env: &'a Env,
    vars: Vars,
    /// Clients with a connection the scenario has not seen end.
    open: BTreeSet<String>,
    /// Events read ahead and not consumed yet.
    unread: BTreeMap<String, VecDeque<Event>>,
}

impl Interpreter<'_> {
    fn next(&mut self, client: &str, patience: Patience) -> Option<Event> {
        if let Some(event) = self.unread.get_mut(client).and_then(VecDeque::pop_front) {
            return Some(event);
        }
        self.driver.next_event(client, patience)
    }

    fn step(&mut self, step: &Step) -> Result<(), String> {
        match step {
            Step::Send { client, packets } => {
                let mut bytes = Vec::new();
                for packet in packets {
                    let vars = &self.vars;
                    bytes.extend(packet.encode(self.env, &|v| vars.get(v).copied()).map_err(|e| e.to_string())?);
                }
                self.send(client, &bytes)
            }
            Step::SendHex { client, bytes } => self.send(client, bytes),
            Step::SendText { client, text } => {
                if !self.open.contains(client.as_str()) {
                    self.driver.open(client)?;
                    self.open.insert(client.clone());
                }
                self.driver.send_text(client, &text.render(self.env))
            }
            Step::Expect { client, packet } => match self.next(client, Patience::Expect) {
                Some(Event::Packet(got)) => matching::check(packet, &got, self.env, &mut self.vars)
                    .map_err(|diff| format!("{client} got {}: {diff}", culex_core::sim::describe(&got))),
                Some(other) => Err(format!("{client} expected {packet}, but {}", other.describe())),
                None => Err(format!("{client} expected {packet}, but nothing arrived")),
            },
            Step::ExpectAnyOrder { client, items } => self.any_order(client, items),
            Step::ExpectClose { client } => match self.next(client, Patience::Expect) {
                Some(Event::Closed) => {
                    self.open.remove(client);
                    Ok(())
                }
                Some(other) => {
                    Err(format!("{client} expected the broker to close the connection, got {}", other.describe()))
                }
                None => Err(format!("{client} expected the broker to close the connection, but it stayed open")),
            },
            Step::ExpectNothing { client } => match self.next(client, Patience::Now) {
                None => Ok(()),
                Some(event) => Err(format!("{client} expected nothing, got {}", event.describe())),
            },
            Step::Drop { client } => {
                self.driver.drop_connection(client);
                self.open.remove(client);
                self.unread.remove(client);
                Ok(())
            }
            Step::Wait(by) => {
                self.driver.wait(*by);
                Ok(())
            }
            Step::Presence { client_id, online } => {
                let id = String::from_utf8_lossy(&client_id.render(self.env)).into_owned();
                self.driver.check_presence(&id, *online)
            }
            Step::Shutdown => self.driver.shutdown(),
            Step::Restart { crash } => {
                // What the broker sent before must have been expected, as at
                // the end of a scenario: after this, connections are gone.
                let open: Vec<String> = self.open.iter().cloned().collect();
                for client in open {
                    match self.next(&client, Patience::Now) {
                        Some(Event::Packet(p)) => {
                            let what = culex_core::sim::describe(&p);
                            return Err(format!("{client} got {what} that no step expects, before the broker stopped"));
                        }
                        Some(other) => {
                            let what = other.describe();
                            return Err(format!(
                                "{client}: {what} where no step expects it, before the broker stopped"
                            ));
                        }
                        None => {}
                    }
                }
                self.driver.restart(*crash)?;
                self.open.clear();
                self.unread.clear();
                Ok(())
            }
            Step::Distinct(names) => {
                let values: Vec<(String, Option<u16>)> =
                    names.iter().map(|n| (format!("${n}"), self.vars.get(n).copied())).collect();
                for (i, (name, value)) in values.iter().enumerate() {
                    if let Some((other, _)) = values[..i].iter().find(|(_, v)| v == value) {
                        return Err(format!("{name} and {other} are both {value:?}; they must differ"));
                    }
                }
                Ok(())
            }
        }
    }

    fn send(&mut self, client: &str, bytes: &[u8]) -> Result<(), String> {
        if !self.open.contains(client) {
            self.driver.open(client)?;
            self.open.insert(client.to_owned());
        }
        self.driver.send(client, bytes);
        Ok(())
    }

    /// Matches the next packets against a set, in any order; optional
    /// members are taken if they arrive within a short grace.
    fn any_order(&mut self, client: &str, items: &[Expected]) -> Result<(), String> {
        let mut matched = vec![false; items.len()];
        let missing = |matched: &[bool], optional: bool| -> Vec<&PacketSpec> {
            items.iter().zip(matched).filter(|(i, m)| !**m && i.optional == optional).map(|(i, _)| &i.packet).collect()
        };
        while !missing(&matched, false).is_empty() {
            let event = self.next(client, Patience::Expect);
            let Some(Event::Packet(got)) = event else {
                let wanted: Vec<String> = missing(&matched, false).iter().map(|p| p.to_string()).collect();
                let seen = event.map_or("nothing arrived".to_owned(), |e| e.describe());
                return Err(format!("{client} still expected {}, but {seen}", wanted.join(" + ")));
            };
            self.take(client, items, &mut matched, got, true)?;
        }
        while !missing(&matched, true).is_empty() {
            match self.next(client, Patience::Grace) {
                Some(Event::Packet(got)) => {
                    if !self.take(client, items, &mut matched, got.clone(), false)? {
                        self.unread.entry(client.to_owned()).or_default().push_front(Event::Packet(got));
                        break;
                    }
                }
                Some(other) => {
                    self.unread.entry(client.to_owned()).or_default().push_front(other);
                    break;
                }
                None => break,
            }
        }
        Ok(())
    }

    /// Marks the first unmatched member `got` matches. With `strict`, a
    /// packet matching nothing is an error; otherwise `Ok(false)`.
    fn take(
        &mut self,
        client: &str,
        items: &[Expected],
        matched: &mut [bool],
        got: Packet,
        strict: bool,
    ) -> Result<bool, String> {
        let mut diffs = Vec::new();
        for (i, item) in items.iter().enumerate() {
            if matched[i] {
                continue;
            }
            match matching::check(&item.packet, &got, self.env, &mut self.vars) {
                Ok(()) => {
                    matched[i] = true;
                    return Ok(true);
                }
                Err(diff) => diffs.push(format!("not {} ({diff})", item.packet)),
            }
        }
        if strict {
            Err(format!(
                "{client} got {}, which is none of the set: {}",
                culex_core::sim::describe(&got),
                diffs.join("; ")
            ))
        } else {
            Ok(false)
        }
    }
}

//! The step language of scenario files: one step per line, written the
//! way a transcript reads.
//!
//! ```text
//! sub -> CONNECT id="{p}sub" clean=0 keepalive=10    # a client sends (opens a connection if it has none)
//! sub <- CONNACK sp=0 rc=0                           # the next packet it receives
//! sub -> SUBSCRIBE id=1 "{p}/t/+" q1
//! sub <- SUBACK id=1 q1
//! pub -> PUBLISH q1 id=7 "{p}/t/a" "hello" + DISCONNECT   # several packets in one write
//! sub <- PUBLISH d0 q1 r0 id=$m "{p}/t/a" "hello"    # $m binds the id the broker chose
//! sub -> PUBACK id=$m
//! pub <- any order: PUBACK id=7 + maybe PINGRESP     # a set, in any order; `maybe` items are optional
//! sub -> hex e0 01 00                                # raw bytes
//! wait 1.5s                                          # time passes (virtual in the core, real over TCP)
//! sub <- nothing                                     # nothing arrived during the wait (only after `wait`)
//! sub <- CLOSE                                       # the broker closes the connection, nothing before
//! sub drops                                          # the client's network connection fails
//! online "{p}sub"                                    # presence (HEXISTS mqtt <id>)
//! offline "{p}sub"
//! distinct $m $n                                     # two bound packet ids differ
//! shutdown                                           # the broker shuts down
//! restart                                            # the broker stops as on SIGTERM and starts again on its store
//! crash                                              # the broker process is killed (kill -9) and started again
//! ```
//!
//! After `restart` and `crash` every client's connection is gone: the next
//! client that sends opens a new one. Scenarios using them set
//! `persistence = true` in `[config]` to keep state across.
//!
//! Packet fields: `CONNECT proto= level= connect_flags= id= clean= keepalive= will= will_payload= will_qos=
//! will_retain= user= password=`; `CONNACK sp= rc=`; `PUBLISH d0|d1 q0..q3 r0|r1 id= "topic" "payload"
//! size=`; `PUBACK|PUBREC|PUBREL|PUBCOMP|UNSUBACK id=`; `SUBSCRIBE id= ("filter" qN)*`; `SUBACK id= (qN|0x80)*`;
//! `UNSUBSCRIBE id= "filter"*`; `PINGREQ`, `PINGRESP`, `DISCONNECT`. Any sent packet takes `flags=0xN` to
//! replace the low four bits of its first byte. In an expectation every field left out is not checked.
//! Strings and placeholders are described in [`crate::text`].

use std::time::Duration;

use crate::packet::{ConnectSpec, IdSpec, PacketSpec, PublishSpec, SendSpec};
use crate::text::Text;

/// An expected packet inside an `any order:` set.
#[derive(Debug, Clone, PartialEq)]
pub struct Expected {
    /// The packet.
    pub packet: PacketSpec,
    /// Written `maybe`: it may arrive or not.
    pub optional: bool,
}

/// One step of a scenario.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// `c -> P + P`: the client writes these packets at once, opening a
    /// connection first if it has none.
    Send {
        /// Client name.
        client: String,
        /// Packets, written in one write.
        packets: Vec<SendSpec>,
    },
    /// `c -> hex ..`: the client writes raw bytes.
    SendHex {
        /// Client name.
        client: String,
        /// The bytes.
        bytes: Vec<u8>,
    },
    /// `c -> TEXT "..."`: the client sends a WebSocket text frame (only
    /// over WebSocket: the step makes the scenario require it).
    SendText {
        /// Client name.
        client: String,
        /// The frame's payload.
        text: Text,
    },
    /// `c <- P`: the next packet the client receives matches.
    Expect {
        /// Client name.
        client: String,
        /// The expected packet.
        packet: PacketSpec,
    },
    /// `c <- any order: P + maybe P`: the next packets match this set.
    ExpectAnyOrder {
        /// Client name.
        client: String,
        /// The set.
        items: Vec<Expected>,
    },
    /// `c <- CLOSE`: the broker closes the connection with nothing more.
    ExpectClose {
        /// Client name.
        client: String,
    },
    /// `c <- nothing`: nothing arrived (no packet, no close) during the
    /// `wait` just before.
    ExpectNothing {
        /// Client name.
        client: String,
    },
    /// `c drops`: the client's connection fails without DISCONNECT.
    Drop {
        /// Client name.
        client: String,
    },
    /// `wait D`: time passes.
    Wait(Duration),
    /// `online "id"` / `offline "id"`: the presence store lists the client
    /// id, or does not.
    Presence {
        /// The MQTT client id.
        client_id: Text,
        /// Whether it must be listed.
        online: bool,
    },
    /// `shutdown`: the broker shuts down (only where the runner controls it).
    Shutdown,
    /// `restart` (the broker stops as on SIGTERM, committing what it holds,
    /// and starts again on its store) or `crash` (its process is killed,
    /// kill -9, and started again): every connection is gone afterwards.
    Restart {
        /// `crash`: killed, not stopped.
        crash: bool,
    },
    /// `distinct $a $b ..`: these packet id variables hold different values
    /// (e.g. ids of copies in flight at the same time).
    Distinct(Vec<String>),
}

impl Step {
    /// The client the step is about, if any.
    pub fn client(&self) -> Option<&str> {
        match self {
            Self::Send { client, .. }
            | Self::SendHex { client, .. }
            | Self::SendText { client, .. }
            | Self::Expect { client, .. }
            | Self::ExpectAnyOrder { client, .. }
            | Self::ExpectClose { client }
            | Self::ExpectNothing { client }
            | Self::Drop { client } => Some(client),
            Self::Wait(_) | Self::Presence { .. } | Self::Shutdown | Self::Restart { .. } | Self::Distinct(_) => None,
        }
    }
}

/// A step with the line it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct ScriptLine {
    /// Line number in the scenario file (1-based).
    pub line: usize,
    /// The line as written, without its comment.
    pub source: String,
    /// The step.
    pub step: Step,
}

/// A token of a step line.
#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Word(String),
    Str(Text),
    Key(String, Val),
    Plus,
}

#[derive(Debug, Clone, PartialEq)]
enum Val {
    Word(String),
    Str(Text),
}

/// Parses a whole script; `first_line` is the file line of its first line.
/// Errors carry the file line.
pub(crate) fn parse_script(script: &str, first_line: usize) -> Result<Vec<ScriptLine>, (usize, String)> {
    let mut steps = Vec::new();
    let mut previous_waits = false;
    for (i, raw) in script.lines().enumerate() {
        let line = first_line + i;
        let toks = tokenize(raw).map_err(|e| (line, e))?;
        if toks.is_empty() {
            continue;
        }
        let step = parse_step(&toks).map_err(|e| (line, e))?;
        // Over TCP "nothing arrived" only means something after a wait.
        match &step {
            Step::ExpectNothing { .. } if !previous_waits => {
                return Err((line, "`<- nothing` must follow a `wait` (or another `<- nothing`)".into()));
            }
            Step::Wait(_) | Step::ExpectNothing { .. } => previous_waits = true,
            _ => previous_waits = false,
        }
        let source = strip_comment(raw).trim().to_owned();
        steps.push(ScriptLine { line, source, step });
    }
    Ok(steps)
}

/// The line without its `#` comment (a `#` inside quotes is kept).
fn strip_comment(line: &str) -> &str {
    let mut quote = None;
    let mut escaped = false;
    for (i, c) in line.char_indices() {
        match (quote, c) {
            (Some(_), _) if escaped => escaped = false,
            (Some(_), '\\') => escaped = true,
            (Some(q), c) if c == q => quote = None,
            (None, '"' | '\'') => quote = Some(c),
            (None, '#') => return &line[..i],
            _ => {}
        }
    }
    line
}

fn tokenize(line: &str) -> Result<Vec<Tok>, String> {
    let line = strip_comment(line);
    let mut toks = Vec::new();
    let mut rest = line.trim_start();
    while !rest.is_empty() {
        if rest.starts_with(['"', '\'']) {
            let (text, after) = quoted(rest)?;
            toks.push(Tok::Str(text));
            rest = after;
        } else {
            let end = rest.find(|c: char| c.is_whitespace() || c == '"' || c == '\'').unwrap_or(rest.len());
            let bare = &rest[..end];
            rest = &rest[end..];
            if let Some(key) = bare.strip_suffix('=') {
                if !rest.starts_with(['"', '\'']) {
                    return Err(format!("`{bare}` needs a value"));
                }
                let (text, after) = quoted(rest)?;
                toks.push(Tok::Key(key.to_owned(), Val::Str(text)));
                rest = after;
            } else if let Some((key, value)) = bare.split_once('=') {
                toks.push(Tok::Key(key.to_owned(), Val::Word(value.to_owned())));
            } else if bare == "+" {
                toks.push(Tok::Plus);
            } else {
                toks.push(Tok::Word(bare.to_owned()));
            }
        }
        rest = rest.trim_start();
    }
    Ok(toks)
}

/// A quoted string at the start of `s`, and what follows it.
fn quoted(s: &str) -> Result<(Text, &str), String> {
    let quote = s.chars().next().unwrap_or('"');
    let mut escaped = false;
    for (i, c) in s.char_indices().skip(1) {
        if escaped {
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == quote {
            return Ok((Text::parse(&s[1..i])?, &s[i + 1..]));
        }
    }
    Err(format!("unterminated string {s}"))
}

fn parse_step(toks: &[Tok]) -> Result<Step, String> {
    let word = |i: usize| match toks.get(i) {
        Some(Tok::Word(w)) => Some(w.as_str()),
        _ => None,
    };
    let no_more = |from: usize| {
        if toks.len() > from { Err(format!("unexpected {:?} at the end of the step", toks[from])) } else { Ok(()) }
    };
    match word(0) {
        Some("wait") => {
            let duration = parse_duration(word(1).ok_or("wait needs a duration, e.g. `wait 1.5s`")?)?;
            no_more(2).map(|()| Step::Wait(duration))
        }
        Some(w @ ("online" | "offline")) => {
            no_more(2)?;
            let Some(Tok::Str(id)) = toks.get(1) else { return Err(format!("{w} needs a quoted client id")) };
            Ok(Step::Presence { client_id: id.clone(), online: w == "online" })
        }
        Some("shutdown") => no_more(1).map(|()| Step::Shutdown),
        Some(w @ ("restart" | "crash")) => no_more(1).map(|()| Step::Restart { crash: w == "crash" }),
        Some("distinct") => {
            let mut vars = Vec::new();
            for tok in &toks[1..] {
                match tok {
                    Tok::Word(w) if w.len() > 1 && w.starts_with('$') => vars.push(w[1..].to_owned()),
                    _ => return Err("distinct takes two or more $variables".into()),
                }
            }
            if vars.len() < 2 {
                return Err("distinct takes two or more $variables".into());
            }
            Ok(Step::Distinct(vars))
        }
        Some(client) if is_client_name(client) => {
            let client = client.to_owned();
            let rest = toks.get(2..).unwrap_or_default();
            match word(1) {
                Some("drops") => no_more(2).map(|()| Step::Drop { client }),
                Some("->") if word(2) == Some("hex") => {
                    let mut hex = String::new();
                    for tok in &toks[3..] {
                        let Tok::Word(w) = tok else { return Err("hex takes hex digits only".into()) };
                        hex.push_str(w);
                    }
                    Ok(Step::SendHex { client, bytes: parse_hex(&hex)? })
                }
                Some("->") if word(2) == Some("TEXT") => {
                    no_more(4)?;
                    let Some(Tok::Str(text)) = toks.get(3) else { return Err("TEXT needs a quoted payload".into()) };
                    Ok(Step::SendText { client, text: text.clone() })
                }
                Some("->") => {
                    let packets = split_plus(rest)
                        .into_iter()
                        .map(|toks| parse_packet(toks, true))
                        .collect::<Result<Vec<_>, _>>()?;
                    Ok(Step::Send { client, packets })
                }
                Some("<-") => match (word(2), word(3)) {
                    (Some("CLOSE"), _) => no_more(3).map(|()| Step::ExpectClose { client }),
                    (Some("nothing"), _) => no_more(3).map(|()| Step::ExpectNothing { client }),
                    (Some("any"), Some("order:")) => {
                        let mut items = Vec::new();
                        for toks in split_plus(&toks[4..]) {
                            let optional = matches!(toks.first(), Some(Tok::Word(w)) if w == "maybe");
                            let toks = if optional { &toks[1..] } else { toks };
                            items.push(Expected { packet: parse_packet(toks, false)?.packet, optional });
                        }
                        if items.iter().all(|i| i.optional) {
                            return Err("an `any order:` set needs at least one packet that is not `maybe`".into());
                        }
                        Ok(Step::ExpectAnyOrder { client, items })
                    }
                    _ => {
                        if split_plus(rest).len() > 1 {
                            return Err("expect one packet per line, or use `any order:`".into());
                        }
                        Ok(Step::Expect { client, packet: parse_packet(rest, false)?.packet })
                    }
                },
                _ => Err(format!("after the client name `{client}` write `->`, `<-` or `drops`")),
            }
        }
        _ => Err("a step starts with a client name, `wait`, `online`, `offline`, `distinct`, `shutdown`, `restart` \
                  or `crash`"
            .into()),
    }
}

fn is_client_name(s: &str) -> bool {
    s.starts_with(|c: char| c.is_ascii_lowercase())
        && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

fn split_plus(toks: &[Tok]) -> Vec<&[Tok]> {
    toks.split(|t| *t == Tok::Plus).collect()
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let secs = if let Some(ms) = s.strip_suffix("ms") {
        ms.parse::<f64>().map(|ms| ms / 1000.0)
    } else if let Some(secs) = s.strip_suffix('s') {
        secs.parse::<f64>()
    } else {
        return Err(format!("`{s}`: write a duration as `500ms` or `1.5s`"));
    };
    match secs {
        Ok(secs) if (0.0..=3600.0).contains(&secs) => Ok(Duration::from_secs_f64(secs)),
        _ => Err(format!("`{s}` is not a duration between 0 and 1 hour")),
    }
}

fn parse_hex(s: &str) -> Result<Vec<u8>, String> {
    if !s.len().is_multiple_of(2) || s.is_empty() {
        return Err(format!("hex `{s}` must have an even, non-zero number of digits"));
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).map_err(|_| format!("`{}` is not a hex byte", &s[i..i + 2])))
        .collect()
}

fn parse_number(s: &str) -> Result<u64, String> {
    let parsed = match s.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => s.parse(),
    };
    parsed.map_err(|_| format!("`{s}` is not a number"))
}

fn small<T: TryFrom<u64>>(key: &str, v: &Val) -> Result<T, String> {
    let Val::Word(w) = v else { return Err(format!("{key}= takes a number")) };
    T::try_from(parse_number(w)?).map_err(|_| format!("{key}={w} is out of range"))
}

fn flag(key: &str, v: &Val) -> Result<bool, String> {
    match v {
        Val::Word(w) if w == "0" || w == "false" => Ok(false),
        Val::Word(w) if w == "1" || w == "true" => Ok(true),
        _ => Err(format!("{key}= takes 0 or 1")),
    }
}

fn text(key: &str, v: &Val) -> Result<Text, String> {
    match v {
        Val::Str(t) => Ok(t.clone()),
        Val::Word(w) => Err(format!("{key}= takes a quoted string, not `{w}`")),
    }
}

fn packet_id(v: &Val) -> Result<IdSpec, String> {
    match v {
        Val::Word(w) if w.starts_with('$') && w.len() > 1 => Ok(IdSpec::Var(w[1..].to_owned())),
        _ => small("id", v).map(IdSpec::Lit),
    }
}

/// `qN` (N decimal or 0x hex): a QoS or SUBACK code byte.
fn qos_word(w: &str) -> Option<u8> {
    let n = w.strip_prefix('q')?;
    u8::try_from(parse_number(n).ok()?).ok()
}

/// A packet and the fixed-header flags that replace the standard ones.
fn parse_packet(toks: &[Tok], send: bool) -> Result<SendSpec, String> {
    let Some(Tok::Word(name)) = toks.first() else { return Err("expected a packet name, e.g. PUBLISH".into()) };
    let mut header_flags = None;
    let mut id = None;
    let mut keys = Vec::new();
    let mut items = Vec::new();
    for tok in &toks[1..] {
        match tok {
            Tok::Key(k, v) if k == "flags" => {
                if !send {
                    return Err("flags= can only be set on a packet sent".into());
                }
                let flags: u8 = small("flags", v)?;
                if flags > 0x0F {
                    return Err("flags= is the low four bits of the first byte: 0x0 to 0xF".into());
                }
                header_flags = Some(flags);
            }
            Tok::Key(k, v) if k == "id" && name != "CONNECT" => id = Some(packet_id(v)?),
            Tok::Key(k, v) => keys.push((k.as_str(), v)),
            Tok::Word(_) | Tok::Str(_) => items.push(tok),
            Tok::Plus => return Err("unexpected +".into()),
        }
    }
    let unknown_keys = |allowed: &[&str]| -> Result<(), String> {
        match keys.iter().find(|(k, _)| !allowed.contains(k)) {
            Some((k, _)) => Err(format!("{name} has no field `{k}=` (it has: id= {})", allowed.join("= "))),
            None => Ok(()),
        }
    };
    let no_items = || match items.first() {
        Some(t) => Err(format!("{name} takes no {t:?}")),
        None => Ok(()),
    };
    let needs_id = |id: &Option<IdSpec>| {
        if send && id.is_none() { Err(format!("{name} needs id= to be sent")) } else { Ok(()) }
    };
    if id.is_some() && matches!(name.as_str(), "CONNACK" | "PINGREQ" | "PINGRESP" | "DISCONNECT") {
        return Err(format!("{name} has no packet id"));
    }
    let packet = match name.as_str() {
        "CONNECT" => {
            no_items()?;
            let mut c = ConnectSpec::default();
            for (k, v) in &keys {
                match *k {
                    "proto" => c.protocol = Some(text(k, v)?),
                    "level" => c.level = Some(small(k, v)?),
                    "connect_flags" => c.flags = Some(small(k, v)?),
                    "id" => c.client_id = Some(text(k, v)?),
                    "clean" => c.clean = Some(flag(k, v)?),
                    "keepalive" => c.keep_alive = Some(small(k, v)?),
                    "will" => c.will_topic = Some(text(k, v)?),
                    "will_payload" => c.will_payload = Some(text(k, v)?),
                    "will_qos" => c.will_qos = Some(small(k, v)?),
                    "will_retain" => c.will_retain = Some(flag(k, v)?),
                    "user" => c.username = Some(text(k, v)?),
                    "password" => c.password = Some(text(k, v)?),
                    other => {
                        return Err(format!(
                            "CONNECT has no field `{other}=` (it has: proto= level= connect_flags= id= clean= \
                             keepalive= will= will_payload= will_qos= will_retain= user= password=)"
                        ));
                    }
                }
            }
            PacketSpec::Connect(Box::new(c))
        }
        "CONNACK" => {
            unknown_keys(&["sp", "rc"])?;
            no_items()?;
            let mut session_present = None;
            let mut code = None;
            for (k, v) in &keys {
                match *k {
                    "sp" => session_present = Some(flag(k, v)?),
                    _ => code = Some(small(k, v)?),
                }
            }
            PacketSpec::ConnAck { session_present, code }
        }
        "PUBLISH" => {
            unknown_keys(&["size"])?;
            let mut p = PublishSpec { id, ..PublishSpec::default() };
            for (_, v) in &keys {
                p.size = Some(small("size", v)?);
            }
            let mut strings = Vec::new();
            for item in items {
                match item {
                    Tok::Str(t) => strings.push(t.clone()),
                    Tok::Word(w) => match w.as_str() {
                        "d0" | "d1" => p.dup = Some(w == "d1"),
                        "r0" | "r1" => p.retain = Some(w == "r1"),
                        "q0" | "q1" | "q2" | "q3" => p.qos = qos_word(w),
                        other => return Err(format!("PUBLISH takes d0|d1, q0..q3, r0|r1, id=, size=; not `{other}`")),
                    },
                    _ => {}
                }
            }
            if strings.len() > 2 || (strings.len() == 2 && p.size.is_some()) {
                return Err("PUBLISH takes a topic and a payload (or size=)".into());
            }
            let mut strings = strings.into_iter();
            p.topic = strings.next();
            p.payload = strings.next();
            if send {
                if p.topic.is_none() {
                    return Err("PUBLISH needs a topic to be sent".into());
                }
                if p.qos.unwrap_or(0) > 0 && p.id.is_none() {
                    return Err("PUBLISH with QoS > 0 needs id= to be sent (id=0 sends a zero id)".into());
                }
            }
            PacketSpec::Publish(p)
        }
        "PUBACK" | "PUBREC" | "PUBREL" | "PUBCOMP" | "UNSUBACK" => {
            unknown_keys(&[])?;
            no_items()?;
            needs_id(&id)?;
            match name.as_str() {
                "PUBACK" => PacketSpec::PubAck(id),
                "PUBREC" => PacketSpec::PubRec(id),
                "PUBREL" => PacketSpec::PubRel(id),
                "PUBCOMP" => PacketSpec::PubComp(id),
                _ => PacketSpec::UnsubAck(id),
            }
        }
        "SUBSCRIBE" => {
            unknown_keys(&[])?;
            needs_id(&id)?;
            let mut filters = Vec::new();
            let mut it = items.into_iter();
            while let Some(item) = it.next() {
                let (Tok::Str(filter), Some(Tok::Word(q))) = (item, it.next()) else {
                    return Err("SUBSCRIBE takes pairs of a quoted filter and a QoS, e.g. \"a/#\" q1".into());
                };
                let qos = qos_word(q).ok_or_else(|| format!("`{q}` is not a requested QoS like q1 or q0x81"))?;
                filters.push((filter.clone(), qos));
            }
            PacketSpec::Subscribe { id, filters }
        }
        "SUBACK" => {
            unknown_keys(&[])?;
            let mut codes = Vec::new();
            for item in items {
                let code = match item {
                    Tok::Word(w) if w == "0x80" => Some(0x80),
                    Tok::Word(w) => qos_word(w),
                    _ => None,
                };
                codes.push(code.ok_or("SUBACK takes return codes q0, q1, q2 or 0x80")?);
            }
            PacketSpec::SubAck { id, codes }
        }
        "UNSUBSCRIBE" => {
            unknown_keys(&[])?;
            needs_id(&id)?;
            let mut filters = Vec::new();
            for item in items {
                let Tok::Str(filter) = item else { return Err("UNSUBSCRIBE takes quoted filters".into()) };
                filters.push(filter.clone());
            }
            PacketSpec::Unsubscribe { id, filters }
        }
        "PINGREQ" | "PINGRESP" | "DISCONNECT" => {
            unknown_keys(&[])?;
            no_items()?;
            match name.as_str() {
                "PINGREQ" => PacketSpec::PingReq,
                "PINGRESP" => PacketSpec::PingResp,
                _ => PacketSpec::Disconnect,
            }
        }
        other => return Err(format!("unknown packet `{other}`")),
    };
    Ok(SendSpec { packet, header_flags })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::text::Env;

    fn one(line: &str) -> Result<Step, String> {
        let steps = parse_script(line, 1).map_err(|(_, e)| e)?;
        steps.into_iter().next().map(|l| l.step).ok_or_else(|| "no step".to_owned())
    }

    fn bytes(line: &str) -> Vec<u8> {
        let env = Env { prefix: "cx".into(), unix_now: 0.0 };
        match one(line) {
            Ok(Step::Send { packets, .. }) => {
                packets.iter().flat_map(|p| p.encode(&env, &|_| Some(9)).unwrap_or_default()).collect()
            }
            Ok(Step::SendHex { bytes, .. }) => bytes,
            other => panic!("not a send: {other:?}"),
        }
    }

    #[test]
    fn sends_encode_as_the_standard_says() {
        assert_eq!(
            bytes(r##"a -> SUBSCRIBE id=1 "a/+" q0 "#" q1"##),
            [0x82, 12, 0, 1, 0, 3, b'a', b'/', b'+', 0, 0, 1, b'#', 1]
        );
        assert_eq!(bytes("a -> PUBREL id=$m flags=0x0"), [0x60, 2, 0, 9]);
        assert_eq!(bytes("a -> PINGREQ + DISCONNECT"), [0xC0, 0, 0xE0, 0]);
        assert_eq!(bytes("a -> hex e0 01 00"), [0xE0, 1, 0]);
        assert_eq!(bytes(r#"a -> PUBLISH d1 q1 r1 id=2 "{p}" 'x'"#), [0x3B, 7, 0, 2, b'c', b'x', 0, 2, b'x']);
    }

    #[test]
    fn expectations_leave_unwritten_fields_open() {
        let step = one(r#"b <- PUBLISH q1 "t" # comment with "quotes""#);
        let Ok(Step::Expect { packet: PacketSpec::Publish(p), .. }) = step else { panic!("{step:?}") };
        assert_eq!((p.dup, p.qos, p.id, p.payload), (None, Some(1), None, None));
    }

    #[test]
    fn any_order_sets_and_maybe() {
        let step = one("b <- any order: PUBACK id=1 + maybe PUBLISH q0");
        let Ok(Step::ExpectAnyOrder { items, .. }) = step else { panic!("{step:?}") };
        assert_eq!(items.iter().map(|i| i.optional).collect::<Vec<_>>(), [false, true]);
    }

    #[test]
    fn restart_and_crash_take_nothing_more() {
        assert_eq!(one("restart"), Ok(Step::Restart { crash: false }));
        assert_eq!(one("crash  # kill -9"), Ok(Step::Restart { crash: true }));
        assert!(one("restart now").is_err());
        assert!(one("crash a").is_err());
    }

    #[test]
    fn nothing_must_follow_a_wait() {
        assert!(parse_script("a <- nothing", 1).is_err());
        assert!(parse_script("wait 1s\na <- nothing\nb <- nothing", 1).is_ok());
    }

    #[test]
    fn mistakes_are_explained() {
        for (line, hint) in [
            (r#"a -> PUBLISH q1 "t""#, "needs id="),
            ("a -> PUBACK", "needs id="),
            ("a -> CONNECT idd=\"x\"", "no field"),
            ("wait 3 s", "duration"),
            ("A -> PINGREQ", "starts with a client name"),
            ("a <- PUBACK id=1 + PUBACK id=2", "any order"),
        ] {
            let err = one(line).err().unwrap_or_default();
            assert!(err.contains(hint), "{line}: {err}");
        }
    }
}

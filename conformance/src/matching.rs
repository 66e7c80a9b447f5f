//! Does a packet the broker sent match what the scenario expects?

use std::collections::BTreeMap;

use culex_core::codec::{Packet, SubscribeReturnCode};
use culex_core::types::PacketId;
use culex_spec::{Env, IdSpec, PacketSpec, Text};

/// Packet id variables bound so far.
pub(crate) type Vars = BTreeMap<String, u16>;

/// Checks `got` against `spec`. On success the variables `spec` binds are
/// added to `vars`; on failure `vars` is untouched and the error says
/// which field differs.
pub(crate) fn check(spec: &PacketSpec, got: &Packet, env: &Env, vars: &mut Vars) -> Result<(), String> {
    let mut m = Matcher { env, vars, bind: Vec::new(), diffs: Vec::new() };
    match (spec, got) {
        (PacketSpec::ConnAck { session_present, code }, Packet::ConnAck(a)) => {
            m.eq("sp", session_present.map(u8::from), u8::from(a.session_present));
            m.eq("rc", *code, a.code as u8);
        }
        (PacketSpec::Publish(p), Packet::Publish(g)) => {
            m.eq("d", p.dup.map(u8::from), u8::from(g.dup));
            m.eq("q", p.qos, g.qos.bits());
            m.eq("r", p.retain.map(u8::from), u8::from(g.retain));
            m.id(p.id.as_ref(), g.packet_id);
            m.text("topic", p.topic.as_ref(), g.topic.as_str().as_bytes());
            m.text("payload", p.payload.as_ref(), &g.payload);
            m.eq("size", p.size, g.payload.len());
        }
        (PacketSpec::PubAck(id), Packet::PubAck(g))
        | (PacketSpec::PubRec(id), Packet::PubRec(g))
        | (PacketSpec::PubRel(id), Packet::PubRel(g))
        | (PacketSpec::PubComp(id), Packet::PubComp(g))
        | (PacketSpec::UnsubAck(id), Packet::UnsubAck(g)) => m.id(id.as_ref(), Some(*g)),
        (PacketSpec::SubAck { id, codes }, Packet::SubAck(g)) => {
            m.id(id.as_ref(), Some(g.packet_id));
            let got: Vec<u8> = g.return_codes.iter().map(|c| SubscribeReturnCode::to_u8(*c)).collect();
            if !codes.is_empty() && *codes != got {
                m.diffs.push(format!("return codes {got:02x?}, expected {codes:02x?}"));
            }
        }
        (PacketSpec::PingResp, Packet::PingResp) => {}
        // Packets only a client sends: the broker sending one is a mismatch
        // like any other, and so is a different type.
        _ => return Err(format!("got {}, expected {}", culex_core::sim::describe(got), spec.name())),
    }
    if m.diffs.is_empty() {
        let Matcher { vars, bind, .. } = m;
        vars.extend(bind);
        Ok(())
    } else {
        Err(m.diffs.join(", "))
    }
}

struct Matcher<'a> {
    env: &'a Env,
    vars: &'a mut Vars,
    bind: Vec<(String, u16)>,
    diffs: Vec<String>,
}

impl Matcher<'_> {
    fn eq<T: PartialEq + std::fmt::Display>(&mut self, field: &str, expected: Option<T>, got: T) {
        if let Some(expected) = expected
            && expected != got
        {
            self.diffs.push(format!("{field} is {got}, expected {expected}"));
        }
    }

    fn id(&mut self, expected: Option<&IdSpec>, got: Option<PacketId>) {
        let got = got.map(PacketId::get);
        match (expected, got) {
            (None, _) => {}
            (Some(_), None) => self.diffs.push("no packet id".into()),
            (Some(IdSpec::Lit(n)), Some(g)) => self.eq("id", Some(*n), g),
            (Some(IdSpec::Var(v)), Some(g)) => match self.vars.get(v) {
                Some(bound) if *bound != g => self.diffs.push(format!("id is {g}, expected ${v} = {bound}")),
                Some(_) => {}
                None => self.bind.push((v.clone(), g)),
            },
        }
    }

    fn text(&mut self, field: &str, expected: Option<&Text>, got: &[u8]) {
        if let Some(expected) = expected {
            let want = expected.render(self.env);
            if want != got {
                self.diffs.push(format!(
                    "{field} is {:?}, expected {:?}",
                    String::from_utf8_lossy(got),
                    String::from_utf8_lossy(&want)
                ));
            }
        }
    }
}

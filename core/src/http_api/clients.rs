//! `/api/v1/clients`: the connected clients whose id starts with a
//! prefix, sorted by id, one page at a time.

use serde_json::{Value, json};

use super::request::Request;
use crate::broker::ConnectedClient;
use crate::peer::Remote;
use crate::types::{ConnId, ConnIdMap, Protocol};

/// Clients per page unless asked.
pub(crate) const DEFAULT_LIMIT: usize = 100;
/// The most clients per page.
pub(crate) const MAX_LIMIT: usize = 1000;

/// Which clients a request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Query {
    prefix: String,
    /// From 1.
    page: usize,
    limit: usize,
}

impl Query {
    /// `prefix`, `page` (from 1) and `limit` (1 to [`MAX_LIMIT`]).
    pub(crate) fn of(request: &Request) -> Result<Self, &'static str> {
        let number = |name: &str, default: usize| match request.param(name) {
            None => Ok(default),
            Some(text) => text.parse::<usize>().ok().filter(|&n| n >= 1).ok_or("page and limit are numbers from 1"),
        };
        let limit = number("limit", DEFAULT_LIMIT)?.min(MAX_LIMIT);
        Ok(Self { prefix: request.param("prefix").unwrap_or_default().to_owned(), page: number("page", 1)?, limit })
    }
}

/// Where a client connected from and when: kept beside the broker only
/// while an `http_api` listener is configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Arrival {
    pub(crate) remote: Option<Remote>,
    /// Unix seconds of its accepted CONNECT.
    pub(crate) since: Option<u64>,
}

impl Query {
    /// How many of the clients in id order the page needs: those before
    /// it and its own.
    fn first(&self) -> usize {
        self.page.saturating_mul(self.limit)
    }

    /// What a shard is asked for its part of the page.
    pub(crate) fn part(&self) -> (String, usize) {
        (self.prefix.clone(), self.first())
    }
}

/// One shard's part of a page of clients (or every shard's, absorbed):
/// how many match, and the rows of the first of them in id order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClientRows {
    count: usize,
    rows: Vec<Value>,
}

impl ClientRows {
    /// The rows of the `clients` whose id starts with `prefix`, the
    /// `first` of them in id order.
    pub(crate) fn of<'a>(
        clients: impl Iterator<Item = ConnectedClient<'a>>,
        (prefix, first): (&str, usize),
        arrivals: &ConnIdMap<Arrival>,
        port: impl Fn(&ConnectedClient<'_>) -> u16,
    ) -> Self {
        let mut matching: Vec<ConnectedClient<'a>> =
            clients.filter(|c| c.client_id.as_str().starts_with(prefix)).collect();
        matching.sort_unstable_by(|a, b| a.client_id.as_str().cmp(b.client_id.as_str()));
        let rows = matching.iter().take(first).map(|c| row(c, arrivals.get(&c.conn), &port)).collect();
        Self { count: matching.len(), rows }
    }

    /// Adds another shard's part.
    pub(crate) fn absorb(&mut self, other: Self) {
        self.count += other.count;
        self.rows.extend(other.rows);
    }

    /// The page `query` asks for, as JSON: `{"data": [...], "meta": {...}}`.
    pub(crate) fn page(mut self, query: &Query) -> Value {
        let id = |row: &Value| row["id"].as_str().unwrap_or_default().to_owned();
        self.rows.sort_unstable_by_key(id);
        let start = (query.page - 1).saturating_mul(query.limit);
        let data: Vec<Value> = self.rows.into_iter().skip(start).take(query.limit).collect();
        json!({
            "data": data,
            "meta": {
                "count": self.count,
                "limit": query.limit,
                "page": query.page,
                "hasnext": start.saturating_add(query.limit) < self.count,
            },
        })
    }
}

fn row(client: &ConnectedClient<'_>, arrival: Option<&Arrival>, port: &impl Fn(&ConnectedClient<'_>) -> u16) -> Value {
    json!({
        "id": client.client_id.as_str(),
        "username": client.username,
        "address": arrival.and_then(|a| a.remote.as_ref()).map(ToString::to_string),
        "listener": port(client),
        "protocol": match client.protocol {
            Protocol::V31 => "mqttv31",
            Protocol::V311 => "mqttv311",
        },
        "keepalive": client.keep_alive,
        "connected_at": arrival.and_then(|a| a.since),
        "subscriptions": client.subscriptions,
        "queued": client.queued,
    })
}

/// Forgets the arrival of a connection that ended.
pub(crate) fn forget(arrivals: &mut Option<ConnIdMap<Arrival>>, conn: ConnId) {
    if let Some(arrivals) = arrivals {
        arrivals.remove(&conn);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::http_api::request::{Method, Request};
    use crate::peer::ListenerId;
    use crate::types::ClientId;

    /// The page `query` asks for of `clients`, as one shard answers it.
    fn page<'a>(
        clients: impl Iterator<Item = ConnectedClient<'a>>,
        query: &Query,
        arrivals: &ConnIdMap<Arrival>,
        port: impl Fn(&ConnectedClient<'_>) -> u16,
    ) -> Value {
        let (prefix, first) = query.part();
        ClientRows::of(clients, (&prefix, first), arrivals, port).page(query)
    }

    fn query(params: &[(&str, &str)]) -> Result<Query, &'static str> {
        let query = params.iter().map(|(n, v)| ((*n).to_owned(), (*v).to_owned())).collect();
        Query::of(&Request { method: Method::Get, path: "/api/v1/clients".into(), query, credentials: None })
    }

    #[test]
    fn pages_of_matching_clients_in_id_order() {
        let ids: Vec<ClientId> = ["dev-3", "other", "dev-1", "dev-2"].into_iter().map(ClientId::new).collect();
        let clients = || {
            ids.iter().enumerate().map(|(n, id)| ConnectedClient {
                conn: ConnId(n as u64 + 1),
                client_id: id,
                username: None,
                listener: ListenerId(0),
                protocol: Protocol::V311,
                keep_alive: 60,
                subscriptions: 0,
                queued: 0,
            })
        };
        let mut arrivals = ConnIdMap::default();
        arrivals.insert(ConnId(3), Arrival { remote: Some(Remote::Unix("/run/x".into())), since: Some(7) });
        let first = page(clients(), &query(&[("prefix", "dev-"), ("limit", "2")]).unwrap(), &arrivals, |_| 1883);
        let ids_of = |page: &Value| -> Vec<String> {
            page["data"].as_array().unwrap().iter().map(|c| c["id"].as_str().unwrap().to_owned()).collect()
        };
        assert_eq!(ids_of(&first), ["dev-1", "dev-2"]);
        assert_eq!(first["meta"], json!({"count": 3, "limit": 2, "page": 1, "hasnext": true}));
        assert_eq!(first["data"][0]["address"], "/run/x:0");
        assert_eq!(first["data"][0]["connected_at"], 7);
        assert_eq!(first["data"][1]["address"], Value::Null);
        let second =
            page(clients(), &query(&[("prefix", "dev-"), ("limit", "2"), ("page", "2")]).unwrap(), &arrivals, |_| 1);
        assert_eq!((ids_of(&second), second["meta"]["hasnext"].as_bool()), (vec!["dev-3".to_owned()], Some(false)));
        let beyond = page(clients(), &query(&[("page", "9")]).unwrap(), &arrivals, |_| 1);
        assert_eq!(ids_of(&beyond).len(), 0);
        // Shards' parts make the same page: "dev-2" and "other" at one,
        // the rest at another.
        let limited = query(&[("prefix", "dev-"), ("limit", "2"), ("page", "2")]).unwrap();
        let (prefix, first) = limited.part();
        let mut rows = ClientRows::of(clients().filter(|c| c.conn.0 % 2 == 0), (&prefix, first), &arrivals, |_| 1);
        rows.absorb(ClientRows::of(clients().filter(|c| c.conn.0 % 2 == 1), (&prefix, first), &arrivals, |_| 1));
        assert_eq!(rows.page(&limited), second);
        assert!(query(&[("page", "0")]).is_err() && query(&[("limit", "x")]).is_err());
        assert_eq!(query(&[("limit", "100000")]).unwrap().limit, MAX_LIMIT);
    }
}

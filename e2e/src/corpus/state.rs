//! The state of one scenario's replay: where it sends its requests, its open connections
//! (plain HTTP/1.1 or upgraded to an HTTP/2 session), what it learned so far, and the result
//! of every exchange. Connections are opened and closed where the recording saw them.

use std::collections::HashMap;

use super::compare::Diff;
use super::http1::RawConn;
use super::load::{Exchange, MetaConn, Scenario};
use super::session::Session;
use super::subst::Vars;
use super::synth::Synth;
use super::ReplayError;

/// Our answer to one recorded exchange, before judging.
#[derive(Debug, Clone)]
pub struct ExchangeResult {
    pub seq: u32,
    pub order: u32,
    pub conn: u32,
    /// The recorded request line.
    pub request_line: String,
    pub diffs: Vec<Diff>,
}

/// Where the replay sends its requests.
#[derive(Debug, Clone)]
pub struct ServerAddr {
    pub host: String,
    pub port: u16,
    pub fingerprint: String,
}

/// One recorded connection on our side: plain HTTP/1.1, or upgraded to an HTTP/2 session.
pub(super) enum Conn {
    Http1(Box<RawConn>),
    Session(Box<Session>),
}

/// State of one scenario's replay.
pub struct Replayer<'s> {
    pub(super) sc: &'s Scenario,
    pub(super) addr: ServerAddr,
    pub vars: Vars,
    pub synth: Synth,
    pub(super) conns: HashMap<u32, Conn>,
    /// Why a recorded session has no counterpart on our side (its upgrade failed).
    pub(super) no_session: HashMap<u32, String>,
    pub(super) results: Vec<ExchangeResult>,
    last_order: HashMap<u32, u32>,
    /// Connections to close after the next exchange: (conn, order of its last exchange).
    closing: Vec<(u32, u32)>,
    idle: Vec<MetaConn>,
}

impl<'s> Replayer<'s> {
    pub fn new(sc: &'s Scenario, addr: ServerAddr, password: &str) -> Replayer<'s> {
        let mut last_order = HashMap::new();
        for e in &sc.exchanges {
            let o = last_order.entry(e.conn).or_insert(0);
            *o = (*o).max(e.order);
        }
        let idle = sc
            .meta
            .connections()
            .into_iter()
            .filter(|c| !last_order.contains_key(&c.conn))
            .collect();
        let vars = Vars {
            password: password.to_string(),
            host: format!("{}:{}", addr.host, addr.port),
            ..Vars::default()
        };
        Replayer {
            sc,
            addr,
            vars,
            synth: Synth::new(),
            conns: HashMap::new(),
            no_session: HashMap::new(),
            results: Vec::new(),
            last_order,
            closing: Vec::new(),
            idle,
        }
    }

    pub(super) async fn connect(&self) -> Result<RawConn, ReplayError> {
        RawConn::connect(&self.addr.host, self.addr.port, &self.addr.fingerprint).await
    }

    /// Connection bookkeeping: a connection is closed one exchange after its last one (a
    /// client's close may reach the server after its next request, as in the recorded push
    /// lock race), and connections that never carried a request are opened and closed where
    /// the recording saw them.
    pub(super) async fn after(&mut self, ex: &Exchange) {
        let due: Vec<u32> = self
            .closing
            .iter()
            .filter(|(_, o)| *o < ex.order)
            .map(|(c, _)| *c)
            .collect();
        self.closing.retain(|(_, o)| *o >= ex.order);
        for c in due {
            self.close_conn(c).await;
        }
        if self.last_order.get(&ex.conn) == Some(&ex.order) {
            self.closing.push((ex.conn, ex.order));
        }
        let idle: Vec<MetaConn> = self
            .idle
            .iter()
            .filter(|c| c.closed_after_seq == Some(ex.seq))
            .cloned()
            .collect();
        for c in idle {
            self.idle.retain(|i| i.conn != c.conn);
            if let Ok(conn) = self.connect().await {
                conn.close().await;
            }
        }
    }

    pub(super) async fn close_conn(&mut self, conn: u32) {
        match self.conns.remove(&conn) {
            Some(Conn::Http1(c)) => c.close().await,
            Some(Conn::Session(s)) => drop(s),
            None => {}
        }
    }

    /// Closes everything still open (end of the scenario).
    pub async fn finish(&mut self) {
        let all: Vec<u32> = self.conns.keys().copied().collect();
        for c in all {
            self.close_conn(c).await;
        }
        self.closing.clear();
        for _ in std::mem::take(&mut self.idle) {
            if let Ok(conn) = self.connect().await {
                conn.close().await;
            }
        }
    }

    /// Appends differences to the result of an earlier exchange (session SETTINGS are read
    /// after the upgrade's own result was stored).
    pub(super) fn add_diffs(&mut self, index: usize, diffs: Vec<Diff>) {
        if let Some(r) = self.results.get_mut(index) {
            r.diffs.extend(diffs);
        }
    }
}

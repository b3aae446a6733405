//! Replay of the recorded wire corpus (`e2e/corpus/`): what the stock Proxmox clients sent to
//! a stock PBS and what it answered. Each scenario is sent to our server in the recorded
//! order and shape, with credentials, ids and data substituted the way the real client would
//! derive them, and every answer is compared with PBS's.
//!
//! Topics: [`load`] (files and schema), [`ojson`] (order-keeping JSON), [`subst`]
//! (placeholders and learned values), [`synth`] (stand-in chunks and blobs), [`http1`] and
//! [`h2replay`] (the wire), [`compare`] (differences), [`allow`] (allowlist and verdicts),
//! [`manifest`] (manifests with our checksums), [`state`] (one replay's connections and
//! results), [`setup`] (what each scenario needs beforehand), [`session`] (HTTP/2 exchanges
//! in backup and reader sessions) and [`replay`] (the driver).

pub mod allow;
pub mod compare;
pub mod h2replay;
pub mod http1;
pub mod load;
pub mod manifest;
pub mod ojson;
pub mod replay;
pub mod session;
pub mod setup;
pub mod state;
pub mod subst;
pub mod synth;

pub use allow::{Allow, AllowKind, Verdict};
pub use compare::Diff;
pub use load::{corpus_dir, load, scenario_names, CorpusError, Scenario};
pub use replay::{replay_scenario, ExchangeReport, ScenarioReport};

use crate::error::ClientError;

/// Errors of the replay machinery itself (not differences in the answers).
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
    #[error("HTTP: {0}")]
    Http(String),
    #[error("{context}: HTTP/2: {source}")]
    H2 { context: String, source: h2::Error },
    #[error("corpus: {0}")]
    Corpus(#[from] CorpusError),
    #[error("test client: {0}")]
    Client(#[from] ClientError),
    #[error("stand-in data: {0}")]
    Synth(String),
    #[error("scenario setup: {0}")]
    Setup(String),
}

impl ReplayError {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        ReplayError::Io {
            context: context.into(),
            source,
        }
    }

    pub(crate) fn h2(context: impl Into<String>, source: h2::Error) -> Self {
        ReplayError::H2 {
            context: context.into(),
            source,
        }
    }
}

//! hierdraft-core: the token stores (context, model, corpus), their file formats and the
//! hierarchical drafter of Hierarchy Drafting speculative decoding. Pure Rust, no Python.

pub mod context_store;
pub mod continuation;
pub mod corpus_index;
pub mod draft_tree;
pub mod drafter;
pub mod error;
pub mod learner;
pub mod level;
pub mod match_hint;
mod model_segment;
pub mod model_store;
mod ngram_hash;
pub mod persist;
mod row_pool;
pub mod session_table;
pub mod shared_store;
mod suffix_array;
pub mod token_rows;

pub use context_store::ContextStore;
pub use continuation::{ChainTrie, Continuation};
pub use corpus_index::CorpusIndex;
pub use draft_tree::{DraftTree, DraftTreeBuilder};
pub use drafter::{propose_batch, DraftSession, DrafterConfig, HierarchicalDrafter};
pub use error::{Error, Result};
pub use learner::Learner;
pub use level::Level;
pub use match_hint::MatchHint;
pub use model_store::{ModelStore, ModelStoreBuilder, ModelStoreConfig};
pub use session_table::{Chains, SessionTable, SessionTableConfig, StepInput};
pub use shared_store::SharedStore;
pub use token_rows::{signature, TokenRows, TokenValue};

//! Hierarchy Drafting: reads the context, model and corpus stores in order of temporal locality
//! and merges their candidates into one draft tree under a node budget.
//!
//! A [`HierarchicalDrafter`] holds the shared, long-lived stores (an optional [`ModelStore`] and
//! [`CorpusIndex`]) and the settings ([`DrafterConfig`]). Each request gets a [`DraftSession`] that
//! owns its own [`ContextStore`] (prompt + accepted tokens).
//!
//! Policy of [`DraftSession::propose`]: the levels are read in `order`; each level is asked for at
//! most its candidate cap of chains (best first, each at most `max_depth` tokens) looked up with
//! the session's whole token sequence as context, and the chains are inserted one after another
//! into a prefix tree until the node budget is full. As soon as the budget is full no further
//! level is queried — the cheap, local levels come first, so the expensive corpus lookup only runs
//! when the closer levels had too little to say.
//!
//! A session keeps its corpus level's last match ([`crate::MatchHint`]), so that each step's corpus
//! lookup continues from the previous step's instead of searching the whole index again; the
//! trees are those of a session started on the same tokens.

use std::sync::{Arc, Mutex, PoisonError};

use rayon::prelude::*;

use crate::context_store::ContextStore;
use crate::corpus_index::CorpusIndex;
use crate::draft_tree::{DraftTree, DraftTreeBuilder};
use crate::error::{check_tokens, Error, Result};
use crate::level::Level;
use crate::match_hint::MatchHint;
use crate::model_store::ModelStore;

/// Settings of a [`HierarchicalDrafter`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DrafterConfig {
    /// Levels to read, in order (no duplicates). Levels whose store is absent are skipped.
    pub order: Vec<Level>,
    /// Maximum number of nodes in a draft tree.
    pub budget: usize,
    /// Maximum depth (chain length) of a draft tree.
    pub max_depth: usize,
    /// Most candidate chains taken from the context level per proposal.
    pub context_candidates: usize,
    /// Most candidate chains taken from the model level per proposal.
    pub model_candidates: usize,
    /// Most candidate chains taken from the corpus level per proposal.
    pub corpus_candidates: usize,
    /// Shortest suffix the context level matches.
    pub context_min_ngram: usize,
    /// Longest suffix the context level matches.
    pub context_max_ngram: usize,
    /// Most corpus occurrences a corpus lookup reads (`None`: the index's own cap,
    /// [`CorpusIndex::max_occurrences`]). Fewer read faster and rank from a smaller sample.
    pub corpus_max_occurrences: Option<usize>,
}

impl Default for DrafterConfig {
    fn default() -> Self {
        Self {
            order: Level::ALL.to_vec(),
            budget: 16,
            max_depth: 8,
            context_candidates: 8,
            model_candidates: 8,
            corpus_candidates: 8,
            context_min_ngram: ContextStore::DEFAULT_MIN_NGRAM,
            context_max_ngram: ContextStore::DEFAULT_MAX_NGRAM,
            corpus_max_occurrences: None,
        }
    }
}

impl DrafterConfig {
    /// Checks every setting; [`Error::InvalidArgument`] names the first bad one.
    pub fn validate(&self) -> Result<()> {
        let bad = |msg: String| Err(Error::InvalidArgument(msg));
        if self.order.is_empty() {
            return bad(
                "order names no level, so nothing would ever be drafted; give at least one \
                 of \"context\", \"model\", \"corpus\""
                    .into(),
            );
        }
        if self.budget == 0 {
            return bad("budget must be >= 1, got 0".into());
        }
        if self.budget > i32::MAX as usize {
            return bad(format!("budget {} is too large", self.budget));
        }
        if self.max_depth == 0 {
            return bad("max_depth must be >= 1, got 0".into());
        }
        for (name, v) in [
            ("context_candidates", self.context_candidates),
            ("model_candidates", self.model_candidates),
            ("corpus_candidates", self.corpus_candidates),
        ] {
            if v == 0 {
                return bad(format!(
                    "{name} must be >= 1, got 0 (leave the level out of `order` to disable it)"
                ));
            }
        }
        if self.corpus_max_occurrences == Some(0) {
            return bad("corpus_max_occurrences must be >= 1, got 0".into());
        }
        if self.context_min_ngram == 0 {
            return bad("context_min_ngram must be >= 1, got 0".into());
        }
        if self.context_min_ngram > self.context_max_ngram {
            return bad(format!(
                "context_min_ngram ({}) must be <= context_max_ngram ({})",
                self.context_min_ngram, self.context_max_ngram
            ));
        }
        let mut seen = [false; 3];
        for &l in &self.order {
            if std::mem::replace(&mut seen[l as usize], true) {
                return bad(format!("level {l} appears twice in order"));
            }
        }
        Ok(())
    }

    /// Candidate cap of `level`.
    pub fn candidates(&self, level: Level) -> usize {
        match level {
            Level::Context => self.context_candidates,
            Level::Model => self.model_candidates,
            Level::Corpus => self.corpus_candidates,
        }
    }
}

/// Shared state of a drafter and all its sessions.
struct Shared {
    config: DrafterConfig,
    model: Option<Arc<ModelStore>>,
    corpus: Option<Arc<CorpusIndex>>,
    /// Vocabulary size known by the stores (the smallest, if both know one).
    vocab_size: Option<u32>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("config", &self.config)
            .field("has_model_store", &self.model.is_some())
            .field("has_corpus_index", &self.corpus.is_some())
            .field("vocab_size", &self.vocab_size)
            .finish()
    }
}

/// Drafts from the context, model and corpus stores (see the module docs).
///
/// Cheap to clone; `Send + Sync`, so one drafter serves many threads.
#[derive(Debug, Clone)]
pub struct HierarchicalDrafter {
    shared: Arc<Shared>,
}

impl HierarchicalDrafter {
    /// A drafter over the given stores; fails with [`Error::InvalidArgument`] on bad settings.
    pub fn new(
        config: DrafterConfig,
        model: Option<Arc<ModelStore>>,
        corpus: Option<Arc<CorpusIndex>>,
    ) -> Result<Self> {
        config.validate()?;
        // Also checks the n-gram range the way the context store sees it.
        ContextStore::new(config.context_min_ngram, config.context_max_ngram)?;
        // A cap of its own reads through its own handle of the index (a memory-mapped index
        // shares its pages; one built in memory is copied).
        let corpus = match (corpus, config.corpus_max_occurrences) {
            (Some(index), Some(cap)) if index.max_occurrences() != cap => {
                let mut own = CorpusIndex::clone(&index);
                own.set_max_occurrences(cap);
                Some(Arc::new(own))
            }
            (corpus, _) => corpus,
        };
        let vocab_size = [
            model.as_ref().and_then(|m| m.config().vocab_size),
            corpus.as_ref().and_then(|c| c.vocab_size()),
        ]
        .into_iter()
        .flatten()
        .min();
        Ok(Self {
            shared: Arc::new(Shared {
                config,
                model,
                corpus,
                vocab_size,
            }),
        })
    }

    /// The settings.
    pub fn config(&self) -> &DrafterConfig {
        &self.shared.config
    }

    /// The model store, if any.
    pub fn model_store(&self) -> Option<&Arc<ModelStore>> {
        self.shared.model.as_ref()
    }

    /// The corpus index, if any.
    pub fn corpus_index(&self) -> Option<&Arc<CorpusIndex>> {
        self.shared.corpus.as_ref()
    }

    /// The vocabulary size the stores know (the smallest when both know one).
    pub fn vocab_size(&self) -> Option<u32> {
        self.shared.vocab_size
    }

    /// Starts a request whose prompt is `prompt`.
    ///
    /// Fails with [`Error::TokenOutOfVocab`] when a prompt token is outside the stores' vocabulary
    /// (or [`Error::ReservedToken`] for `u32::MAX`).
    pub fn start(&self, prompt: &[u32]) -> Result<DraftSession> {
        check_tokens(prompt, self.shared.vocab_size)?;
        let cfg = &self.shared.config;
        let mut context = ContextStore::new(cfg.context_min_ngram, cfg.context_max_ngram)?;
        context.extend(prompt);
        Ok(DraftSession {
            shared: Arc::clone(&self.shared),
            context,
            prompt_len: prompt.len(),
            corpus_hint: Mutex::default(),
        })
    }
}

/// Proposes a draft tree for every session, in parallel (rayon); `result[i]` is for `sessions[i]`.
///
/// Each session uses the settings of the drafter that started it.
pub fn propose_batch(sessions: &[&DraftSession]) -> Vec<DraftTree> {
    if sessions.len() <= 1 {
        return sessions.iter().map(|s| s.propose()).collect();
    }
    sessions.par_iter().map(|s| s.propose()).collect()
}

/// Drafting state of one request: its context store and the drafter's shared stores.
#[derive(Debug)]
pub struct DraftSession {
    shared: Arc<Shared>,
    context: ContextStore,
    prompt_len: usize,
    /// The corpus level's last match: the next step's lookup continues from it. A mutex because
    /// `propose` takes `&self` (sessions propose in parallel, each its own).
    corpus_hint: Mutex<MatchHint>,
}

impl DraftSession {
    /// The whole token sequence: prompt followed by every accepted token.
    pub fn tokens(&self) -> &[u32] {
        self.context.tokens()
    }

    /// Number of prompt tokens.
    pub fn prompt_len(&self) -> usize {
        self.prompt_len
    }

    /// The accepted tokens (everything after the prompt).
    pub fn generated(&self) -> &[u32] {
        &self.context.tokens()[self.prompt_len..]
    }

    /// The settings of the drafter that started this session.
    pub fn config(&self) -> &DrafterConfig {
        &self.shared.config
    }

    /// Proposes a draft tree (see the module docs for the policy).
    pub fn propose(&self) -> DraftTree {
        let cfg = &self.shared.config;
        let mut builder = DraftTreeBuilder::new(cfg.budget, cfg.max_depth);
        for &level in &cfg.order {
            if builder.is_full() {
                break;
            }
            let k = cfg.candidates(level);
            let chains = match level {
                Level::Context => self.context.lookup(k, cfg.max_depth),
                Level::Corpus => match &self.shared.corpus {
                    Some(corpus) => {
                        let mut hint = self
                            .corpus_hint
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner);
                        corpus.lookup_continuing(self.tokens(), k, cfg.max_depth, &mut hint)
                    }
                    None => continue,
                },
                Level::Model => match &self.shared.model {
                    Some(model) => model.lookup(self.tokens(), k, cfg.max_depth),
                    None => continue,
                },
            };
            for chain in &chains {
                builder.insert_chain(&chain.tokens, chain.score, level);
                if builder.is_full() {
                    break;
                }
            }
        }
        builder.finish()
    }

    /// Records accepted tokens (the bonus token included); they extend the context.
    ///
    /// Fails with [`Error::TokenOutOfVocab`] / [`Error::ReservedToken`] (and records nothing) when a
    /// token is outside the stores' vocabulary.
    pub fn accept(&mut self, tokens: &[u32]) -> Result<()> {
        check_tokens(tokens, self.shared.vocab_size)?;
        self.context.extend(tokens);
        Ok(())
    }

    /// Ends the request. With `learn`, the accepted output (tokens after the prompt) is added to
    /// the model store's online part, if the drafter has a model store.
    pub fn finish(self, learn: bool) -> Result<()> {
        if learn {
            if let Some(model) = &self.shared.model {
                let generated = self.generated();
                if !generated.is_empty() {
                    model.add(generated)?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drafter(cfg: DrafterConfig) -> HierarchicalDrafter {
        HierarchicalDrafter::new(cfg, None, None).expect("valid config")
    }

    #[test]
    fn config_validation() {
        let ok = DrafterConfig::default();
        assert!(ok.validate().is_ok());
        for cfg in [
            DrafterConfig {
                budget: 0,
                ..ok.clone()
            },
            DrafterConfig {
                max_depth: 0,
                ..ok.clone()
            },
            DrafterConfig {
                model_candidates: 0,
                ..ok.clone()
            },
            DrafterConfig {
                context_min_ngram: 3,
                context_max_ngram: 2,
                ..ok.clone()
            },
            DrafterConfig {
                order: vec![Level::Model, Level::Model],
                ..ok.clone()
            },
            DrafterConfig {
                order: vec![],
                ..ok.clone()
            },
            DrafterConfig {
                corpus_max_occurrences: Some(0),
                ..ok.clone()
            },
        ] {
            assert!(matches!(
                HierarchicalDrafter::new(cfg, None, None),
                Err(Error::InvalidArgument(_))
            ));
        }
    }

    #[test]
    fn context_level_drafts_repeated_text() {
        let d = drafter(DrafterConfig::default());
        let mut s = d.start(&[1, 2, 3, 4, 5, 1, 2]).expect("start");
        let t = s.propose();
        assert!(t.validate().is_ok());
        assert!(!t.is_empty());
        assert_eq!(t.path(t.len() - 1).first(), Some(&3));
        assert!(t.sources.iter().all(|&x| x == Level::Context as u8));
        s.accept(&[3, 4]).expect("accept");
        assert_eq!(s.tokens(), &[1, 2, 3, 4, 5, 1, 2, 3, 4]);
        assert_eq!(s.generated(), &[3, 4]);
        s.finish(true).expect("finish");
    }

    #[test]
    fn budget_and_depth_are_respected() {
        let d = drafter(DrafterConfig {
            budget: 3,
            max_depth: 2,
            ..DrafterConfig::default()
        });
        let prompt: Vec<u32> = (0..50).map(|i| (i * 7 % 5) as u32).collect();
        let s = d.start(&prompt).expect("start");
        let t = s.propose();
        assert!(t.len() <= 3);
        assert!(t.max_depth() <= 2);
        assert!(t.validate().is_ok());
    }

    #[test]
    fn batch_matches_single() {
        let d = drafter(DrafterConfig::default());
        let sessions: Vec<DraftSession> = (0..5u32)
            .map(|k| {
                let p: Vec<u32> = (0..40).map(|i| (i * (k + 1)) % 7).collect();
                d.start(&p).expect("start")
            })
            .collect();
        let refs: Vec<&DraftSession> = sessions.iter().collect();
        let batch = propose_batch(&refs);
        for (s, t) in sessions.iter().zip(batch) {
            assert_eq!(s.propose(), t);
        }
    }

    #[test]
    fn a_growing_session_drafts_like_a_fresh_one() {
        // The session's corpus lookups continue from its last match; a session started on the
        // same tokens searches from scratch. Their trees must be the same at every step.
        let docs: Vec<Vec<u32>> = (0..6u32)
            .map(|k| (0..300u32).map(|i| (i * (k + 3) + i / 7) % 11).collect())
            .collect();
        let refs: Vec<&[u32]> = docs.iter().map(Vec::as_slice).collect();
        let corpus = Arc::new(CorpusIndex::build(&refs, None).expect("corpus"));
        let cfg = DrafterConfig {
            order: vec![Level::Corpus, Level::Context],
            ..DrafterConfig::default()
        };
        let d = HierarchicalDrafter::new(cfg, None, Some(corpus)).expect("drafter");
        let mut s = d.start(&docs[2][..20]).expect("start");
        let mut pos = 20;
        for step in 0..120 {
            assert_eq!(
                s.propose(),
                d.start(s.tokens()).expect("start").propose(),
                "step {step}"
            );
            // follow the document, now and then leaving it
            let take = 1 + step % 3;
            let next: Vec<u32> = if step % 10 == 9 {
                vec![(step % 11) as u32; take]
            } else {
                docs[2][pos..pos + take].to_vec()
            };
            pos += take;
            s.accept(&next).expect("accept");
        }
    }

    #[test]
    fn vocab_checks_and_learning() {
        let model = Arc::new(
            crate::ModelStore::empty(crate::ModelStoreConfig {
                vocab_size: Some(10),
                ..Default::default()
            })
            .expect("config"),
        );
        let corpus = Arc::new(CorpusIndex::build(&[&[1, 2, 3, 4]], Some(12)).expect("corpus"));
        let d =
            HierarchicalDrafter::new(DrafterConfig::default(), Some(model.clone()), Some(corpus))
                .expect("drafter");
        assert_eq!(d.vocab_size(), Some(10));
        assert!(matches!(
            d.start(&[1, 10]),
            Err(Error::TokenOutOfVocab { token: 10, .. })
        ));
        let mut s = d.start(&[5, 1]).expect("start");
        let t = s.propose();
        assert_eq!(t.tokens, vec![2, 3, 4]);
        assert_eq!(t.sources, vec![Level::Corpus as u8; 3]);
        assert!(s.accept(&[2, 11]).is_err());
        assert_eq!(s.tokens(), &[5, 1]);
        s.accept(&[7, 8, 9]).expect("accept");
        s.finish(true).expect("finish");
        let found = model.lookup(&[7], 4, 4);
        assert_eq!(found.first().map(|c| c.tokens.clone()), Some(vec![8, 9]));
        assert!(model.lookup(&[5], 4, 4).is_empty());
    }

    #[test]
    fn corpus_cap_is_the_drafters_own() {
        // After [5]: 2 once, 9 three times. One occurrence read is the first of the suffix
        // array's range (sorted by what follows), so a cap of 1 drafts 2 where all four draft 9.
        let docs: [&[u32]; 4] = [&[5, 2], &[5, 9], &[5, 9], &[5, 9]];
        let corpus = Arc::new(CorpusIndex::build(&docs, None).expect("corpus"));
        let first_token = |cap: Option<usize>| {
            let cfg = DrafterConfig {
                corpus_max_occurrences: cap,
                ..DrafterConfig::default()
            };
            let d = HierarchicalDrafter::new(cfg, None, Some(corpus.clone())).expect("drafter");
            let cap_read = d.corpus_index().map(|c| c.max_occurrences());
            let tree = d.start(&[7, 5]).expect("start").propose();
            (tree.best_chain(1), cap_read)
        };
        let default_cap = corpus.max_occurrences();
        assert_eq!(first_token(None), (vec![9], Some(default_cap)));
        assert_eq!(first_token(Some(1)), (vec![2], Some(1)));
        assert_eq!(corpus.max_occurrences(), default_cap);
    }

    #[test]
    fn types_are_send_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<HierarchicalDrafter>();
        assert_send_sync::<DraftSession>();
        assert_send_sync::<DraftTree>();
    }
}

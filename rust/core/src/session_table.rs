//! `SessionTable`: the draft sessions of an engine that steps a batch of rows and names its
//! requests by nothing but their tokens (vLLM's proposer interface), and the chains it drafts for
//! them, one [`SessionTable::step`] per engine step.
//!
//! The engine hands over, per step, a token matrix (row `i` holds some request's tokens up to
//! `lengths[i]`, stale values past it), each row's length, and how many tokens each row gained
//! since the last step (`0`: the row does not draft this step, e.g. a prefill chunk). Rows are
//! reused and reordered as requests come and go, so every sequence is named by its
//! [`signature`](crate::token_rows::signature) (length, first and last tokens).
//!
//! Rules of a step, per row with `c` new tokens and length `n`:
//! - `c > 0`: the session filed under the signature of the row's first `n - c` tokens is the same
//!   request one step earlier, wherever its row was; it is extended by the `c` new tokens. Not
//!   found, the row may still hold the session it held after the last step, with more tokens since
//!   (the engine skipped steps): if the row still starts with that session's sequence, the session
//!   is extended by every token since. Otherwise a new session starts with the first `n - c`
//!   tokens as its prompt and accepts the `c` new ones (a new request, or one whose session was
//!   evicted). The row then drafts its chain.
//! - `c == 0`: the session filed under the signature of all `n` tokens stays with the row,
//!   unchanged, and nothing is drafted.
//!
//! A session is claimed by at most one row per step. Afterwards each claimed session is filed
//! under the signature of its `n` tokens, for the next step. Sessions no row claimed move to an
//! idle pool, least recently used first out: a preempted request that comes back finds its
//! session there. Beyond `max_idle` idle sessions the oldest are evicted: with `learn`, a
//! [`Learner`] feeds their output to the model store's online part
//! ([`DraftSession::finish`]) on its own thread, after the step's chains are drafted, and later
//! steps draft from whatever it has published by then (learning a request costs far more than
//! drafting a row, so no step waits for it, unless the backlog of sessions not learned yet
//! exceeds its bound, [`SessionTableConfig::max_learning_backlog`]).
//! [`SessionTable::wait_for_learning`] waits for all of it.
//!
//! Drafting: each drafting row gets the best chain ([`DraftTree::best_chain`]) of the tree its
//! session proposes, at most `min(max_chain, max_model_len - n)` tokens: exactly what a fresh
//! session of the same drafter over the row's tokens proposes. Extending, starting and drafting
//! are independent per row: they run on the calling thread, or, from
//! [`SessionTableConfig::parallel_min_rows`] drafting rows on, on the calling thread and the
//! table's helper threads together (`RowPool`: as many threads in all as rayon's pool has; the
//! helpers are woken as the step starts, and the step never waits for one to wake).
//!
//! Two different live sequences with the same signature (same length, head and tail, or a hash
//! collision) may swap sessions: that costs draft quality, never correctness, since every draft
//! is verified.
//!
//! [`DraftTree::best_chain`]: crate::DraftTree::best_chain

use std::collections::VecDeque;

use ahash::AHashMap;

use crate::drafter::{DraftSession, HierarchicalDrafter};
use crate::error::{Error, Result};
use crate::learner::Learner;
use crate::row_pool::RowPool;
use crate::token_rows::{signature, TokenRows, TokenValue};

/// Default of [`SessionTableConfig::parallel_min_rows`]: below it, waking a helper thread costs
/// about what the second core saves (on 2 cores, 24 rows took the same time either way, 12 and 16
/// rows longer in parallel; measured by steps alternating between two tables).
pub const DEFAULT_PARALLEL_MIN_ROWS: usize = 24;

/// Default of [`SessionTableConfig::max_learning_backlog`]: enough for bursts of finished
/// requests, while bounding the memory of sessions waiting to be learned.
pub const DEFAULT_MAX_LEARNING_BACKLOG: usize = 512;

/// Settings of a [`SessionTable`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionTableConfig {
    /// Longest chain drafted per row (vLLM's `num_speculative_tokens`), >= 1.
    pub max_chain: usize,
    /// No sequence grows past this many tokens and no chain runs past it (>= 1).
    pub max_model_len: usize,
    /// Most idle sessions kept before the oldest are evicted.
    pub max_idle: usize,
    /// Whether evicted sessions feed the model store's online part.
    pub learn: bool,
    /// Steps with at least this many drafting rows work on their rows in parallel.
    pub parallel_min_rows: usize,
    /// Most evicted sessions waiting to be learned before a step waits for the learner.
    pub max_learning_backlog: usize,
}

impl SessionTableConfig {
    /// Settings for chains of at most `max_chain` tokens in sequences of at most `max_model_len`;
    /// the rest take their defaults (no idle pool, learning on, the default parallel threshold).
    pub fn new(max_chain: usize, max_model_len: usize) -> Self {
        Self {
            max_chain,
            max_model_len,
            max_idle: 0,
            learn: true,
            parallel_min_rows: DEFAULT_PARALLEL_MIN_ROWS,
            max_learning_backlog: DEFAULT_MAX_LEARNING_BACKLOG,
        }
    }

    fn validate(&self) -> Result<()> {
        if self.max_chain == 0 || self.max_model_len == 0 {
            return Err(Error::InvalidArgument(format!(
                "a session table needs max_chain >= 1 and max_model_len >= 1, got max_chain={} \
                 and max_model_len={}",
                self.max_chain, self.max_model_len
            )));
        }
        Ok(())
    }
}

/// One step's input (see the module docs): row `i` has `lengths[i]` tokens, the first of them
/// in `tokens.row(i)`, `new_counts[i]` of which are new since the last step. The rows are
/// `0..new_counts.len()`; `lengths` and `tokens` may have more (a batch's capacity).
#[derive(Clone, Copy, Debug)]
pub struct StepInput<'a, T> {
    pub new_counts: &'a [usize],
    pub lengths: &'a [usize],
    pub tokens: TokenRows<'a, T>,
}

/// The chains of one step, flattened: row `i`'s chain is `tokens[offsets[i]..offsets[i + 1]]`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Chains {
    pub tokens: Vec<u32>,
    pub offsets: Vec<usize>,
}

impl Chains {
    /// Number of rows.
    pub fn len(&self) -> usize {
        self.offsets.len().saturating_sub(1)
    }

    /// True when there is no row.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Row `i`'s chain (empty past the last row).
    pub fn chain(&self, i: usize) -> &[u32] {
        match (self.offsets.get(i), self.offsets.get(i + 1)) {
            (Some(&a), Some(&b)) => &self.tokens[a..b],
            _ => &[],
        }
    }

    fn clear(&mut self) {
        self.tokens.clear();
        self.offsets.clear();
        self.offsets.push(0);
    }

    fn push(&mut self, chain: &[u32]) {
        self.tokens.extend_from_slice(chain);
        self.offsets.push(self.tokens.len());
    }
}

/// "No slot" in the slot links.
const NONE: u32 = u32::MAX;

/// A session and its place in the table.
#[derive(Debug)]
struct Slot {
    /// `None` only while a step works on it (or starts it).
    session: Option<DraftSession>,
    /// The signature the session is filed under.
    key: u64,
    /// The next slot filed under the same key (`NONE`: the last).
    next_same_key: u32,
    /// The last step a row claimed the session.
    claimed_step: u64,
    /// Claimed at the last step (else idle).
    live: bool,
    /// When it went idle; matches its entry in the idle queue.
    idle_stamp: u64,
}

/// What a row held after the last step.
#[derive(Clone, Copy, Debug)]
struct RowHeld {
    key: u64,
    len: usize,
    slot: u32,
}

/// One drafting row's work of a step: bring its session (taken out of its slot, or started
/// here) up to date and draft its chain. Jobs are independent, so they may run in parallel.
#[derive(Debug)]
struct RowJob {
    row: usize,
    slot: u32,
    /// The session to extend; `None`: start one with the first `prompt_len` tokens.
    session: Option<DraftSession>,
    /// The session is started by this job.
    is_new: bool,
    prompt_len: usize,
    /// Tokens `from..len` are accepted into the session.
    from: usize,
    len: usize,
    /// Longest chain this row may get.
    room: usize,
    chain: Vec<u32>,
    error: Option<Error>,
}

impl RowJob {
    /// Runs the job; a failure is kept in `error` (the session, if any, stays in `session`).
    fn run<T: TokenValue>(&mut self, drafter: &HierarchicalDrafter, tokens: &TokenRows<'_, T>) {
        if let Err(e) = self.try_run(drafter, tokens.row(self.row)) {
            self.error = Some(e);
        }
    }

    fn try_run<T: TokenValue>(&mut self, drafter: &HierarchicalDrafter, row: &[T]) -> Result<()> {
        let vocab = drafter.vocab_size();
        let at_row = |e: Error| Error::InvalidArgument(format!("row {}: {e}", self.row));
        let mut session = match self.session.take() {
            Some(session) => session,
            None => {
                let prompt = token_ids(row, self.row, 0..self.prompt_len, vocab)?;
                drafter.start(&prompt).map_err(at_row)?
            }
        };
        let accepted = token_ids(row, self.row, self.from..self.len, vocab)
            .and_then(|new| session.accept(&new).map_err(at_row));
        if accepted.is_ok() && self.room > 0 {
            self.chain = session.propose().best_chain(self.room);
        }
        self.session = Some(session);
        accepted
    }
}

/// `row[range]` as token ids, checked against the vocabulary; the error names the row and
/// position of the first bad value.
fn token_ids<T: TokenValue>(
    row: &[T],
    row_index: usize,
    range: std::ops::Range<usize>,
    vocab: Option<u32>,
) -> Result<Vec<u32>> {
    let start = range.start;
    let mut out = Vec::with_capacity(range.len());
    for (offset, &value) in row[range].iter().enumerate() {
        let problem = match (value.to_token(), vocab) {
            (None, _) => "is not a token id (token ids are 0..=4294967294)".to_string(),
            (Some(u32::MAX), _) => "is reserved (u32::MAX separates documents)".to_string(),
            (Some(t), Some(v)) if t >= v => format!("is out of the vocabulary (vocab_size = {v})"),
            (Some(t), _) => {
                out.push(t);
                continue;
            }
        };
        return Err(Error::InvalidArgument(format!(
            "row {row_index}: tokens[{row_index}, {}] = {value} {problem}",
            start + offset
        )));
    }
    Ok(out)
}

/// The sessions of one engine (see the module docs). Not for concurrent steps: `step` takes
/// `&mut self`.
#[derive(Debug)]
pub struct SessionTable {
    drafter: HierarchicalDrafter,
    config: SessionTableConfig,
    slots: Vec<Option<Slot>>,
    free: Vec<u32>,
    /// Signature -> first slot filed under it (the rest follow `next_same_key`).
    by_key: AHashMap<u64, u32>,
    /// Slots claimed at the last step.
    live: Vec<u32>,
    /// Slots that went idle, oldest first, with their stamp (stale entries are skipped).
    idle_queue: VecDeque<(u32, u64)>,
    idle_count: usize,
    step_count: u64,
    stamp: u64,
    /// What each row held after the last step (`slot == NONE`: nothing).
    rows: Vec<RowHeld>,
    started: u64,
    /// Slots claimed in the current step.
    claimed: Vec<u32>,
    learner: Learner,
    /// Runs the rows of large steps on several threads.
    pool: RowPool,
}

impl SessionTable {
    /// An empty table whose sessions `drafter` starts.
    pub fn new(drafter: HierarchicalDrafter, config: SessionTableConfig) -> Result<Self> {
        config.validate()?;
        let learner = Learner::new(config.max_learning_backlog);
        Ok(Self {
            drafter,
            config,
            slots: Vec::new(),
            free: Vec::new(),
            by_key: AHashMap::new(),
            live: Vec::new(),
            idle_queue: VecDeque::new(),
            idle_count: 0,
            step_count: 0,
            stamp: 0,
            rows: Vec::new(),
            started: 0,
            claimed: Vec::new(),
            learner,
            pool: RowPool::new(rayon::current_num_threads()),
        })
    }

    /// The drafter that starts the sessions.
    pub fn drafter(&self) -> &HierarchicalDrafter {
        &self.drafter
    }

    /// The settings.
    pub fn config(&self) -> &SessionTableConfig {
        &self.config
    }

    /// Sessions a row claimed at the last step.
    pub fn live(&self) -> usize {
        self.live.len()
    }

    /// Sessions waiting in the idle pool.
    pub fn idle(&self) -> usize {
        self.idle_count
    }

    /// Sessions the table holds: after a step, the live and the idle ones.
    pub fn sessions(&self) -> usize {
        self.slots.len() - self.free.len()
    }

    /// Sessions started since the table was made.
    pub fn started(&self) -> u64 {
        self.started
    }

    /// The tokens of the session row `row` held after the last step (`None`: none).
    pub fn row_tokens(&self, row: usize) -> Option<&[u32]> {
        let held = self.rows.get(row)?;
        self.slot(held.slot)
            .and_then(|s| s.session.as_ref())
            .map(|s| s.tokens())
    }

    /// Waits until the model store has learned every session evicted so far; returns the first
    /// learning error since the last wait.
    pub fn wait_for_learning(&mut self) -> Result<()> {
        self.learner.wait()
    }

    fn slot(&self, id: u32) -> Option<&Slot> {
        self.slots.get(id as usize).and_then(Option::as_ref)
    }

    fn slot_mut(&mut self, id: u32) -> Option<&mut Slot> {
        self.slots.get_mut(id as usize).and_then(Option::as_mut)
    }

    /// Brings every row's session up to date and writes each row's chain into `out` (see the
    /// module docs); `out` holds `input.new_counts.len()` rows afterwards.
    ///
    /// Errors: inconsistent input ([`Error::InvalidArgument`], nothing changed); a failure to
    /// learn from a session evicted earlier (returned once, before anything changes; the next
    /// step runs normally); a value that is no token id or is outside the drafter's
    /// vocabulary (`InvalidArgument` naming the first such row and position; every session
    /// claimed this step is dropped without learning).
    pub fn step<T: TokenValue>(
        &mut self,
        input: &StepInput<'_, T>,
        out: &mut Chains,
    ) -> Result<()> {
        out.clear();
        self.check(input)?;
        self.learner.poll()?;
        self.step_count += 1;
        self.claimed.clear();
        let rows = input.new_counts.len();
        let min_rows = self.config.parallel_min_rows;
        let parallel = move |jobs: usize| jobs >= min_rows;
        if parallel(rows) {
            // The helpers wake while the rows are planned.
            self.pool.wake();
        }
        let mut held = Vec::with_capacity(rows);
        let mut jobs = Vec::new();
        for row in 0..rows {
            held.push(self.plan_row(input, row, &mut jobs));
        }
        let drafter = &self.drafter;
        let tokens = &input.tokens;
        if parallel(jobs.len()) {
            self.pool.run(&mut jobs, |job| job.run(drafter, tokens));
        } else {
            jobs.iter_mut().for_each(|job| job.run(drafter, tokens));
        }
        let failed = self.put_back(&mut jobs);
        if let Some(error) = failed {
            self.drop_claimed();
            return Err(error);
        }
        self.rows = held;
        self.retire_unclaimed();
        let evicted = self.evict_to(self.config.max_idle);
        self.learn(evicted);
        let mut jobs = jobs.iter().peekable();
        for row in 0..rows {
            match jobs.next_if(|job| job.row == row) {
                Some(job) => out.push(&job.chain),
                None => out.push(&[]),
            }
        }
        Ok(())
    }

    /// Checks the shapes and every row's length; names the first problem.
    fn check<T: TokenValue>(&self, input: &StepInput<'_, T>) -> Result<()> {
        let rows = input.new_counts.len();
        let bad = |msg: String| Err(Error::InvalidArgument(msg));
        if input.lengths.len() < rows {
            return bad(format!(
                "{} lengths for {rows} rows of new tokens",
                input.lengths.len()
            ));
        }
        if input.tokens.rows() < rows {
            return bad(format!(
                "a token matrix of {} rows for {rows} rows of new tokens",
                input.tokens.rows()
            ));
        }
        let longest = input.tokens.width().min(self.config.max_model_len);
        for (row, (&count, &len)) in input.new_counts.iter().zip(input.lengths).enumerate() {
            if len < count || len > longest {
                return bad(format!(
                    "row {row}: length {len} with {count} new token(s); a row holds at least its \
                     new tokens and at most min(the token matrix width = {}, max_model_len = {})",
                    input.tokens.width(),
                    self.config.max_model_len
                ));
            }
        }
        Ok(())
    }

    /// Finds (or reserves a slot for) the row's session, claims it, and queues the row's job.
    fn plan_row<T: TokenValue>(
        &mut self,
        input: &StepInput<'_, T>,
        row: usize,
        jobs: &mut Vec<RowJob>,
    ) -> RowHeld {
        let tokens = input.tokens.row(row);
        let (len, count) = (input.lengths[row], input.new_counts[row]);
        let key = signature(tokens, len);
        if count == 0 {
            // The row's sequence did not change; it keeps its session, if it has one.
            let slot = self.find(key).unwrap_or(NONE);
            if slot != NONE {
                self.claim(slot, key);
            }
            return RowHeld { key, len, slot };
        }
        let prev = len - count;
        let found = self
            .find(signature(tokens, prev))
            .map(|slot| (slot, prev))
            .or_else(|| self.catch_up(tokens, row, prev));
        let (slot, from) = match found {
            Some((slot, from)) => {
                self.claim(slot, key);
                (slot, from)
            }
            None => (self.reserve(key), prev),
        };
        let session = self.slot_mut(slot).and_then(|s| s.session.take());
        jobs.push(RowJob {
            row,
            slot,
            is_new: session.is_none(),
            session,
            prompt_len: prev,
            from,
            len,
            room: self.config.max_chain.min(self.config.max_model_len - len),
            chain: Vec::new(),
            error: None,
        });
        RowHeld { key, len, slot }
    }

    /// The session the row held after the last step, if the row still starts with its sequence
    /// and it is shorter than `prev` (the engine skipped steps), with the position to extend it
    /// from.
    fn catch_up<T: TokenValue>(
        &self,
        tokens: &[T],
        row: usize,
        prev: usize,
    ) -> Option<(u32, usize)> {
        let held = *self.rows.get(row)?;
        if held.slot == NONE || held.len >= prev || signature(tokens, held.len) != held.key {
            return None;
        }
        self.find(held.key).map(|slot| (slot, held.len))
    }

    /// A new slot, filed under `key` and claimed, whose session the step's job starts.
    fn reserve(&mut self, key: u64) -> u32 {
        let slot = Slot {
            session: None,
            key,
            next_same_key: NONE,
            claimed_step: self.step_count,
            live: true,
            idle_stamp: 0,
        };
        let id = match self.free.pop() {
            Some(id) => {
                self.slots[id as usize] = Some(slot);
                id
            }
            None => {
                self.slots.push(Some(slot));
                (self.slots.len() - 1) as u32
            }
        };
        self.file(id);
        self.claimed.push(id);
        id
    }

    /// Puts the jobs' sessions back into their slots; returns the first row's error, if any.
    fn put_back(&mut self, jobs: &mut [RowJob]) -> Option<Error> {
        let mut first = None;
        for job in jobs.iter_mut() {
            if job.is_new && job.session.is_some() {
                self.started += 1;
            }
            if let Some(slot) = self
                .slots
                .get_mut(job.slot as usize)
                .and_then(Option::as_mut)
            {
                slot.session = job.session.take();
            }
            if first.is_none() {
                first = job.error.take();
            }
        }
        first
    }

    /// A slot filed under `key` that no row claimed yet this step; one claimed at the last step
    /// comes before an idle one.
    fn find(&self, key: u64) -> Option<u32> {
        let mut cur = *self.by_key.get(&key)?;
        let mut idle = None;
        while let Some(slot) = self.slot(cur) {
            if slot.claimed_step != self.step_count {
                if slot.live {
                    return Some(cur);
                }
                idle = idle.or(Some(cur));
            }
            cur = slot.next_same_key;
        }
        idle
    }

    /// Files slot `id` under its `key`, at the head of that key's list.
    fn file(&mut self, id: u32) {
        let Some(key) = self.slot(id).map(|s| s.key) else {
            return;
        };
        let next = self.by_key.insert(key, id).unwrap_or(NONE);
        if let Some(slot) = self.slot_mut(id) {
            slot.next_same_key = next;
        }
    }

    /// Takes slot `id` out of its key's list.
    fn unfile(&mut self, id: u32) {
        let Some((key, next)) = self.slot(id).map(|s| (s.key, s.next_same_key)) else {
            return;
        };
        let Some(&head) = self.by_key.get(&key) else {
            return;
        };
        if head == id {
            if next == NONE {
                self.by_key.remove(&key);
            } else {
                self.by_key.insert(key, next);
            }
            return;
        }
        let mut cur = head;
        while let Some(slot) = self.slot(cur) {
            let after = slot.next_same_key;
            if after == id {
                if let Some(prev) = self.slot_mut(cur) {
                    prev.next_same_key = next;
                }
                return;
            }
            cur = after;
        }
    }

    /// Marks slot `id` as claimed this step and files it under `key`.
    fn claim(&mut self, id: u32, key: u64) {
        let step = self.step_count;
        let Some(slot) = self.slot_mut(id) else {
            return;
        };
        let refile = slot.key != key;
        let was_idle = !slot.live;
        slot.claimed_step = step;
        slot.live = true;
        if was_idle {
            self.idle_count -= 1;
        }
        if refile {
            self.unfile(id);
            if let Some(slot) = self.slot_mut(id) {
                slot.key = key;
            }
            self.file(id);
        }
        self.claimed.push(id);
    }

    /// Removes slot `id` from the table and hands back its session.
    fn remove(&mut self, id: u32) -> Option<DraftSession> {
        self.unfile(id);
        let slot = self.slots.get_mut(id as usize)?.take()?;
        if !slot.live {
            self.idle_count -= 1;
        }
        self.free.push(id);
        slot.session
    }

    /// After an error: every session claimed this step is dropped without learning, and the
    /// rows forget what they held.
    fn drop_claimed(&mut self) {
        for id in std::mem::take(&mut self.claimed) {
            self.remove(id);
        }
        let slots = &self.slots;
        self.live
            .retain(|&id| slots.get(id as usize).is_some_and(Option::is_some));
        self.rows.clear();
    }

    /// Sessions claimed at the last step but not at this one go idle; the claimed ones are the
    /// new live set.
    fn retire_unclaimed(&mut self) {
        let step = self.step_count;
        let previous = std::mem::take(&mut self.live);
        for id in previous {
            let stamp = self.stamp + 1;
            let Some(slot) = self.slot_mut(id) else {
                continue;
            };
            if slot.claimed_step == step {
                continue;
            }
            slot.live = false;
            slot.idle_stamp = stamp;
            self.stamp = stamp;
            self.idle_queue.push_back((id, stamp));
            self.idle_count += 1;
        }
        self.live = std::mem::take(&mut self.claimed);
        // Entries of sessions that were claimed again are stale; drop them before they pile up.
        if self.idle_queue.len() > 2 * self.idle_count + 64 {
            let slots = &self.slots;
            self.idle_queue.retain(|&(id, stamp)| {
                slots
                    .get(id as usize)
                    .and_then(Option::as_ref)
                    .is_some_and(|s| !s.live && s.idle_stamp == stamp)
            });
        }
    }

    /// Removes the oldest idle sessions beyond `limit` and returns them.
    fn evict_to(&mut self, limit: usize) -> Vec<DraftSession> {
        let mut evicted = Vec::new();
        while self.idle_count > limit {
            let Some((id, stamp)) = self.idle_queue.pop_front() else {
                break;
            };
            let current = self
                .slot(id)
                .is_some_and(|s| !s.live && s.idle_stamp == stamp);
            if current {
                evicted.extend(self.remove(id));
            }
        }
        evicted
    }

    /// Evicted sessions feed the model store (in the background) when learning is on.
    fn learn(&mut self, evicted: Vec<DraftSession>) {
        if self.config.learn {
            self.learner.learn(evicted);
        }
    }

    /// Finishes every session, live ones too (feeding the model store when learning) and waits
    /// for all learning; the table is empty afterwards. Returns the first learning error.
    pub fn close(&mut self) -> Result<()> {
        let before = self.learner.wait();
        self.step_count += 1;
        self.retire_unclaimed();
        self.rows.clear();
        let evicted = self.evict_to(0);
        self.idle_queue.clear();
        self.learn(evicted);
        let after = self.learner.wait();
        before.and(after)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drafter::DrafterConfig;
    use crate::token_rows::TokenRows;

    fn drafter() -> HierarchicalDrafter {
        HierarchicalDrafter::new(
            DrafterConfig {
                max_depth: 4,
                ..DrafterConfig::default()
            },
            None,
            None,
        )
        .expect("valid config")
    }

    /// A batch of `rows` rows of `width` tokens holding stale values past their lengths.
    struct Batch {
        width: usize,
        data: Vec<i32>,
        lengths: Vec<usize>,
    }

    impl Batch {
        fn new(rows: usize, width: usize) -> Self {
            let data = (0..rows * width).map(|i| (i * 7 % 13) as i32).collect();
            Self {
                width,
                data,
                lengths: vec![0; rows],
            }
        }

        fn set(&mut self, row: usize, tokens: &[i32]) {
            self.data[row * self.width..row * self.width + tokens.len()].copy_from_slice(tokens);
            self.lengths[row] = tokens.len();
        }

        fn push(&mut self, row: usize, tokens: &[i32]) {
            let start = row * self.width + self.lengths[row];
            self.data[start..start + tokens.len()].copy_from_slice(tokens);
            self.lengths[row] += tokens.len();
        }

        fn seq(&self, row: usize) -> Vec<u32> {
            self.data[row * self.width..row * self.width + self.lengths[row]]
                .iter()
                .map(|&t| t as u32)
                .collect()
        }

        fn step(&self, table: &mut SessionTable, counts: &[usize]) -> Result<Chains> {
            let mut out = Chains::default();
            let input = StepInput {
                new_counts: counts,
                lengths: &self.lengths,
                tokens: TokenRows::new(&self.data, self.width)?,
            };
            table.step(&input, &mut out)?;
            // Every session the table holds is live or idle after a step.
            assert_eq!(table.live() + table.idle(), table.sessions());
            Ok(out)
        }
    }

    fn fresh_chain(d: &HierarchicalDrafter, seq: &[u32], room: usize) -> Vec<u32> {
        d.start(seq).expect("start").propose().best_chain(room)
    }

    fn text(seed: usize, n: usize) -> Vec<i32> {
        (0..n)
            .map(|i| ((i * (seed + 3)) % 11 + (i / 9) % 3) as i32)
            .collect()
    }

    #[test]
    fn rows_extend_their_sessions_wherever_they_move() {
        let d = drafter();
        let mut table =
            SessionTable::new(d.clone(), SessionTableConfig::new(4, 256)).expect("table");
        let mut batch = Batch::new(3, 256);
        for row in 0..3 {
            batch.set(row, &text(row, 30 + 10 * row));
        }
        let mut counts = vec![1, 1, 1];
        for step in 0..40 {
            if step % 7 == 3 {
                // The engine swaps rows 0 and 2.
                let w = batch.width;
                let (head, tail) = batch.data.split_at_mut(2 * w);
                head[..w].swap_with_slice(&mut tail[..w]);
                batch.lengths.swap(0, 2);
                counts.swap(0, 2);
            }
            let out = batch.step(&mut table, &counts).expect("step");
            assert_eq!(out.len(), 3);
            for row in 0..3 {
                let seq = batch.seq(row);
                assert_eq!(table.row_tokens(row), Some(&seq[..]));
                assert_eq!(
                    out.chain(row),
                    &fresh_chain(&d, &seq, 4)[..],
                    "step {step} row {row}"
                );
            }
            for (row, count) in counts.iter_mut().enumerate() {
                let n = 1 + (step + row) % 3;
                let next: Vec<i32> = (0..n).map(|j| ((step * 5 + row + j) % 11) as i32).collect();
                batch.push(row, &next);
                *count = n;
            }
        }
        assert_eq!(table.started(), 3);
        assert_eq!((table.live(), table.idle()), (3, 0));
    }

    #[test]
    fn identical_rows_get_one_session_each() {
        let d = drafter();
        let mut table =
            SessionTable::new(d.clone(), SessionTableConfig::new(4, 128)).expect("table");
        let mut batch = Batch::new(3, 128);
        for row in 0..3 {
            batch.set(row, &text(5, 40)); // the same request three times
        }
        batch.step(&mut table, &[1, 1, 1]).expect("step");
        batch
            .step(&mut table, &[0, 0, 0])
            .expect("a step without new tokens");
        assert_eq!((table.live(), table.idle()), (3, 0));
        for step in 0..4 {
            for row in 0..3 {
                batch.push(row, &[(row + step) as i32]); // then they part
            }
            let out = batch.step(&mut table, &[1, 1, 1]).expect("step");
            for row in 0..3 {
                assert_eq!(table.row_tokens(row), Some(&batch.seq(row)[..]));
                assert_eq!(out.chain(row), &fresh_chain(&d, &batch.seq(row), 4)[..]);
            }
        }
        assert_eq!((table.started(), table.live()), (3, 3));
    }

    #[test]
    fn rows_without_new_tokens_keep_their_session_and_draft_nothing() {
        let d = drafter();
        let mut table =
            SessionTable::new(d.clone(), SessionTableConfig::new(4, 256)).expect("table");
        let mut batch = Batch::new(2, 256);
        batch.set(0, &text(1, 40));
        batch.set(1, &text(2, 40));
        batch.step(&mut table, &[1, 1]).expect("step");
        for _ in 0..3 {
            let out = batch.step(&mut table, &[0, 0]).expect("step");
            assert!(out.chain(0).is_empty() && out.chain(1).is_empty());
        }
        batch.push(0, &[3, 4]);
        let out = batch.step(&mut table, &[2, 0]).expect("step");
        assert_eq!(out.chain(0), &fresh_chain(&d, &batch.seq(0), 4)[..]);
        assert_eq!(table.started(), 2);
    }

    #[test]
    fn skipped_steps_and_preempted_requests_find_their_session() {
        let d = drafter();
        let config = SessionTableConfig {
            max_idle: 4,
            ..SessionTableConfig::new(4, 256)
        };
        let mut table = SessionTable::new(d.clone(), config).expect("table");
        let mut batch = Batch::new(2, 256);
        batch.set(0, &text(3, 50));
        batch.set(1, &text(4, 50));
        batch.step(&mut table, &[1, 1]).expect("step");
        // The engine skips two steps: each row gained 3 tokens, the last step reports one.
        batch.push(0, &[1, 2, 3]);
        batch.push(1, &[4, 5, 6]);
        let out = batch.step(&mut table, &[1, 1]).expect("step");
        assert_eq!(table.started(), 2);
        for row in 0..2 {
            assert_eq!(table.row_tokens(row), Some(&batch.seq(row)[..]));
            assert_eq!(out.chain(row), &fresh_chain(&d, &batch.seq(row), 4)[..]);
        }
        // Row 0's request is preempted: for three steps only row 1 runs (moved to row 0).
        let kept = batch.seq(0);
        let moved = batch.seq(1);
        let mut alone = Batch::new(2, 256);
        let moved_i32: Vec<i32> = moved.iter().map(|&t| t as i32).collect();
        alone.set(0, &moved_i32);
        for step in 0..3 {
            alone.push(0, &[step]);
            let out = alone.step(&mut table, &[1]).expect("step");
            assert_eq!(out.chain(0), &fresh_chain(&d, &alone.seq(0), 4)[..]);
        }
        assert_eq!((table.live(), table.idle()), (1, 1));
        // It comes back in row 1 with one more token.
        let mut back: Vec<i32> = kept.iter().map(|&t| t as i32).collect();
        back.push(9);
        alone.set(1, &back);
        alone.push(0, &[2]);
        let out = alone.step(&mut table, &[1, 1]).expect("step");
        assert_eq!(table.started(), 2);
        assert_eq!((table.live(), table.idle()), (2, 0));
        for row in 0..2 {
            assert_eq!(out.chain(row), &fresh_chain(&d, &alone.seq(row), 4)[..]);
        }
    }

    #[test]
    fn chains_stop_at_max_chain_and_max_model_len() {
        let d = drafter();
        let period: Vec<i32> = (1..10).cycle().take(54).collect();
        let mut table = SessionTable::new(d, SessionTableConfig::new(4, 57)).expect("table");
        let mut batch = Batch::new(3, 57);
        batch.set(0, &period[..44]);
        batch.set(1, &period[..54]);
        let mut full = period.clone();
        full.extend([1, 2, 3]);
        batch.set(2, &full);
        let out = batch.step(&mut table, &[1, 1, 1]).expect("step");
        assert_eq!(out.chain(0), &[9, 1, 2, 3]); // four tokens of the period
        assert_eq!(out.chain(1), &[1, 2, 3]); // three positions left
        assert!(out.chain(2).is_empty()); // at max_model_len
    }

    #[test]
    fn idle_sessions_are_bounded_and_feed_the_model_store() {
        let model = std::sync::Arc::new(
            crate::ModelStore::empty(crate::ModelStoreConfig::default()).expect("config"),
        );
        let d = HierarchicalDrafter::new(DrafterConfig::default(), Some(model.clone()), None)
            .expect("drafter");
        let config = SessionTableConfig {
            max_idle: 2,
            ..SessionTableConfig::new(4, 256)
        };
        let mut table = SessionTable::new(d, config).expect("table");
        for request in 0..5 {
            let mut batch = Batch::new(1, 256);
            batch.set(0, &text(request, 20));
            batch.step(&mut table, &[1]).expect("step");
            let marker = [90 + request as i32, 80, 70 + request as i32];
            batch.push(0, &marker);
            batch.step(&mut table, &[3]).expect("step");
            // The request finishes: the next step has no row for it.
            Batch::new(0, 256)
                .step(&mut table, &[])
                .expect("empty step");
            assert!(table.idle() <= 2);
        }
        // The three oldest requests were evicted and learned; the two newest still wait.
        table.wait_for_learning().expect("learned");
        for request in 0..5 {
            let found = model.lookup(&[90 + request, 80], 4, 1);
            let learned = found.iter().any(|c| c.tokens == vec![70 + request]);
            assert_eq!(learned, request < 3, "request {request}");
        }
        table.close().expect("close");
        assert_eq!((table.live(), table.idle()), (0, 0));
        assert!(model
            .lookup(&[94, 80], 4, 1)
            .iter()
            .any(|c| c.tokens == vec![74]));
    }

    #[test]
    fn bad_input_is_refused_and_the_table_stays_usable() {
        let d = HierarchicalDrafter::new(
            DrafterConfig::default(),
            Some(std::sync::Arc::new(
                crate::ModelStore::empty(crate::ModelStoreConfig {
                    vocab_size: Some(50),
                    ..Default::default()
                })
                .expect("config"),
            )),
            None,
        )
        .expect("drafter");
        let mut table =
            SessionTable::new(d.clone(), SessionTableConfig::new(4, 64)).expect("table");
        let mut batch = Batch::new(2, 64);
        batch.set(0, &[1, 2, 1, 2]);
        batch.set(1, &[3, 4, 3, 4]);
        batch.step(&mut table, &[1, 1]).expect("step");
        let message = |r: Result<Chains>| r.expect_err("refused").to_string();
        assert!(message(batch.step(&mut table, &[5, 1])).contains("row 0: length 4 with 5 new"));
        batch.lengths[1] = 65;
        assert!(message(batch.step(&mut table, &[1, 1])).contains("max_model_len = 64"));
        batch.lengths[1] = 4;
        let mut short = Chains::default();
        let input = StepInput {
            new_counts: &[1, 1, 1],
            lengths: &batch.lengths,
            tokens: TokenRows::new(&batch.data, 64).expect("matrix"),
        };
        assert!(table.step(&input, &mut short).is_err());
        batch.push(0, &[1]);
        batch.push(1, &[-7]);
        assert!(message(batch.step(&mut table, &[1, 1])).contains("row 1: tokens[1, 4] = -7"));
        batch.data[64 + 4] = 50;
        assert!(message(batch.step(&mut table, &[1, 1])).contains("row 1: tokens[1, 4] = 50"));
        batch.data[64 + 4] = 3;
        let out = batch.step(&mut table, &[1, 1]).expect("step");
        for row in 0..2 {
            assert_eq!(out.chain(row), &fresh_chain(&d, &batch.seq(row), 4)[..]);
        }
        // The sessions of the failed steps were dropped, not kept somewhere.
        assert_eq!((table.live(), table.idle(), table.sessions()), (2, 0, 2));
        assert!(SessionTable::new(d, SessionTableConfig::new(0, 64)).is_err());
    }

    #[test]
    fn parallel_and_sequential_drafting_agree() {
        let d = drafter();
        let mut batch = Batch::new(40, 128);
        for row in 0..40 {
            batch.set(row, &text(row, 60 + row));
        }
        let counts = vec![1; 40];
        let mut outs = Vec::new();
        for parallel_min_rows in [1, usize::MAX] {
            let config = SessionTableConfig {
                parallel_min_rows,
                ..SessionTableConfig::new(4, 128)
            };
            let mut table = SessionTable::new(d.clone(), config).expect("table");
            outs.push(batch.step(&mut table, &counts).expect("step"));
        }
        assert_eq!(outs[0], outs[1]);
        assert!((0..40).any(|row| !outs[0].chain(row).is_empty()));
    }
}

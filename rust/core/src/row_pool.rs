//! `RowPool`: helper threads that share a caller's batch of independent jobs. It suits work that
//! is short (an engine step of a few hundred microseconds) and arrives at times nobody can
//! predict, so the helpers are asleep when it arrives.
//!
//! The caller never waits for a helper to wake up. It opens the batch, claims jobs from a shared
//! counter itself, and closes the batch when none is left. A helper that is awake in time claims
//! jobs too; one that wakes late finds the batch closed and does nothing. After closing, the
//! caller waits only for the jobs that helpers are still running. A rayon scope, by contrast,
//! returns only after every task it spawned has started and ended. On a virtual machine whose
//! idle core has halted, that wake-up (twice: the helper's, then the caller's own) cost more
//! than the second core saved.
//!
//! Protocol: one atomic word holds an `OPEN` flag and the number of helpers inside the batch.
//! - A helper enters only while `OPEN` is set, by a compare-and-swap that adds one. It reads the
//!   batch only once inside, and leaves by subtracting one.
//! - The caller clears `OPEN`, then returns only once the count is back to 0. So no helper
//!   touches the batch after [`RowPool::run`] returns, although the batch lives on the caller's
//!   stack.
//!
//! [`RowPool::wake`] starts the helpers' wake-up before the caller's jobs are ready. A woken
//! helper spins for a short while ([`SPIN_FOR`]) waiting for a batch before it sleeps again.

use std::any::Any;
use std::cell::UnsafeCell;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// The flag bit of [`Shared::state`]; the other bits count the helpers inside the batch.
const OPEN: usize = 1 << (usize::BITS - 1);
/// How long a woken helper waits for a batch, spinning, before it sleeps again. It covers a
/// step's serial part before its jobs are ready, not the gap between steps.
pub const SPIN_FOR: Duration = Duration::from_micros(200);

/// A batch as the helpers see it: a loop that claims and runs jobs until none is left.
type ClaimLoop = dyn Fn() + Sync;

struct Shared {
    /// `OPEN` | the number of helpers inside the batch.
    state: AtomicUsize,
    /// Bumped after each batch opens, so a helper enters each batch once.
    generation: AtomicU64,
    /// The open batch's claim loop. Written by the caller only while no helper is inside and
    /// the batch is closed; read by a helper only while it is inside. Its lifetime is erased:
    /// [`RowPool::run`] keeps the loop alive until no helper is inside.
    claim: UnsafeCell<Option<&'static ClaimLoop>>,
    /// The first panic of a job run by a helper, for the caller to resume.
    panic: Mutex<Option<Box<dyn Any + Send>>>,
    stop: AtomicBool,
}

// SAFETY: every field is thread-safe but `claim`, whose accesses the protocol orders (see the
// module docs): the caller writes it before the `OPEN` store (release) and after the count is
// seen at 0 (acquire); helpers read it after entering (acquire).
unsafe impl Sync for Shared {}

impl Shared {
    /// Adds one to the helpers inside the batch if it is open.
    fn enter(&self) -> bool {
        let mut state = self.state.load(Ordering::Relaxed);
        while state & OPEN != 0 {
            match self.state.compare_exchange_weak(
                state,
                state + 1,
                Ordering::Acquire,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(now) => state = now,
            }
        }
        false
    }

    fn keep_panic(&self, panic: Box<dyn Any + Send>) {
        let mut first = self.panic.lock().unwrap_or_else(PoisonError::into_inner);
        first.get_or_insert(panic);
    }
}

/// A helper's life: sleep, wake, run whatever batch is open, sleep again.
fn helper(shared: &Shared) {
    let mut seen = 0u64;
    let mut spin_until: Option<Instant> = None;
    while !shared.stop.load(Ordering::Acquire) {
        let generation = shared.generation.load(Ordering::Acquire);
        if generation != seen {
            seen = generation;
            if shared.enter() {
                // SAFETY: inside an open batch, the claim loop is set and alive (protocol).
                let claim = unsafe { *shared.claim.get() };
                if let Some(claim) = claim {
                    if let Err(panic) = catch_unwind(AssertUnwindSafe(claim)) {
                        shared.keep_panic(panic);
                    }
                }
                shared.state.fetch_sub(1, Ordering::Release);
                spin_until = None;
                continue;
            }
        }
        match spin_until {
            Some(until) if Instant::now() < until => std::hint::spin_loop(),
            _ => {
                thread::park();
                spin_until = Some(Instant::now() + SPIN_FOR);
            }
        }
    }
}

/// A raw pointer to the jobs that closures may share; each index is claimed by one thread.
struct Jobs<J>(*mut J);

// SAFETY: the pointer is only used to hand each job to exactly one thread (`J: Send`).
unsafe impl<J: Send> Sync for Jobs<J> {}

impl<J> Jobs<J> {
    /// Job `i`.
    ///
    /// # Safety
    /// `i` is in bounds and no other reference to job `i` exists while the result lives.
    #[allow(clippy::mut_from_ref)]
    unsafe fn get(&self, i: usize) -> &mut J {
        // SAFETY: forwarded.
        unsafe { &mut *self.0.add(i) }
    }
}

/// Closes the batch when dropped (also when the caller's own job panics): clears `OPEN`, waits
/// until no helper is inside, and forgets the claim loop.
struct Closing<'a>(&'a Shared);

impl Drop for Closing<'_> {
    fn drop(&mut self) {
        let shared = self.0;
        shared.state.fetch_and(!OPEN, Ordering::AcqRel);
        let mut spins = 0u32;
        while shared.state.load(Ordering::Acquire) != 0 {
            // A helper inside finishes the job it holds; jobs are short, so spin, then yield.
            if spins < 1 << 12 {
                std::hint::spin_loop();
                spins += 1;
            } else {
                thread::yield_now();
            }
        }
        // SAFETY: closed and no helper inside: nobody reads the claim loop now.
        unsafe { *shared.claim.get() = None };
    }
}

/// Helper threads for batches of independent jobs (see the module docs). Threads start on the
/// first [`RowPool::wake`] or [`RowPool::run`] that can use them, and stop when it is dropped.
pub struct RowPool {
    threads: usize,
    shared: Arc<Shared>,
    helpers: Vec<JoinHandle<()>>,
    started: bool,
    /// When the helpers were last woken for a batch that has not run yet.
    woken_at: Option<Instant>,
    /// How many times the helpers were woken (for the tests).
    wakes: u64,
}

impl std::fmt::Debug for RowPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RowPool")
            .field("threads", &self.threads)
            .field("helpers", &self.helpers.len())
            .finish()
    }
}

impl RowPool {
    /// A pool running batches on `threads` threads in all, the caller's included (0 counts as
    /// 1). When a helper thread cannot be started, the batches run on fewer threads.
    pub fn new(threads: usize) -> Self {
        RowPool {
            threads: threads.max(1),
            shared: Arc::new(Shared {
                state: AtomicUsize::new(0),
                generation: AtomicU64::new(0),
                claim: UnsafeCell::new(None),
                panic: Mutex::new(None),
                stop: AtomicBool::new(false),
            }),
            helpers: Vec::new(),
            started: false,
            woken_at: None,
            wakes: 0,
        }
    }

    fn start(&mut self) {
        if std::mem::replace(&mut self.started, true) {
            return;
        }
        for i in 1..self.threads {
            let shared = Arc::clone(&self.shared);
            let spawned = thread::Builder::new()
                .name(format!("hierdraft-rows-{i}"))
                .spawn(move || helper(&shared));
            match spawned {
                Ok(handle) => self.helpers.push(handle),
                Err(_) => break,
            }
        }
    }

    /// Starts waking the helpers for a batch that [`RowPool::run`] will open soon. A second
    /// call while they still spin from the first does nothing.
    pub fn wake(&mut self) {
        if self.threads < 2 {
            return;
        }
        if self.woken_at.is_some_and(|at| at.elapsed() < SPIN_FOR / 2) {
            return;
        }
        self.start();
        for h in &self.helpers {
            h.thread().unpark();
        }
        self.woken_at = Some(Instant::now());
        self.wakes += 1;
    }

    /// Runs `work` on every job exactly once, on the calling thread and on the helpers that
    /// are awake in time; returns when every job has run. A job's panic is resumed here, after
    /// the batch has closed.
    pub fn run<J: Send>(&mut self, jobs: &mut [J], work: impl Fn(&mut J) + Sync) {
        if self.threads < 2 || jobs.len() < 2 {
            jobs.iter_mut().for_each(work);
            return;
        }
        self.wake();
        self.woken_at = None;
        let count = jobs.len();
        let next = AtomicUsize::new(0);
        let base = Jobs(jobs.as_mut_ptr());
        let claim = || loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            if i >= count {
                return;
            }
            // SAFETY: every index below `count` is claimed by one thread only, and the jobs
            // outlive the batch (`Closing` waits for the helpers inside).
            work(unsafe { base.get(i) });
        };
        let claim_ref: &(dyn Fn() + Sync + '_) = &claim;
        let shared = &*self.shared;
        // SAFETY: the batch is closed with no helper inside (the last `Closing` saw to it), so
        // nobody reads the claim loop now. The erased lifetime is safe: `closing`, dropped
        // before `claim` goes out of scope, waits until no helper can use it.
        unsafe {
            *shared.claim.get() = Some(std::mem::transmute::<
                &(dyn Fn() + Sync + '_),
                &'static ClaimLoop,
            >(claim_ref));
        }
        shared.state.store(OPEN, Ordering::Release);
        shared.generation.fetch_add(1, Ordering::Release);
        let closing = Closing(shared);
        claim();
        drop(closing);
        let panic = shared
            .panic
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(panic) = panic {
            resume_unwind(panic);
        }
    }
}

impl Drop for RowPool {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        for h in &self.helpers {
            h.thread().unpark();
        }
        for h in self.helpers.drain(..) {
            let _ = h.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_job_runs_once_whatever_the_threads() {
        for threads in [0usize, 1, 2, 3, 8] {
            let mut pool = RowPool::new(threads);
            for n in [0usize, 1, 2, 3, 17, 256] {
                for round in 0..20 {
                    if round % 2 == 0 {
                        pool.wake();
                    }
                    let mut runs = vec![0u32; n];
                    pool.run(&mut runs, |r| *r += 1);
                    assert_eq!(runs, vec![1; n], "{n} jobs on {threads} threads");
                }
            }
        }
    }

    #[test]
    fn helpers_take_part_when_awake() {
        let mut pool = RowPool::new(2);
        let caller = thread::current().id();
        let mut helped = false;
        for _ in 0..200 {
            pool.wake();
            thread::sleep(Duration::from_micros(50));
            let mut ran_on = vec![None; 64];
            pool.run(&mut ran_on, |r| {
                thread::sleep(Duration::from_micros(20));
                *r = Some(thread::current().id());
            });
            assert!(ran_on.iter().all(Option::is_some));
            if ran_on.iter().any(|&t| t != Some(caller)) {
                helped = true;
                break;
            }
        }
        assert!(helped, "a woken helper never ran a job");
    }

    #[test]
    fn a_batch_wakes_the_helpers_unless_a_recent_wake_did() {
        let mut pool = RowPool::new(2);
        let mut jobs = vec![0u32; 8];
        pool.wake();
        pool.run(&mut jobs, |j| *j += 1);
        // 1: the wake just before the batch serves it (2 if this thread was descheduled
        // between the two calls for longer than the helpers spin).
        let first = pool.wakes;
        assert!((1..=2).contains(&first), "{first} wakes");
        pool.wake();
        // No batch follows soon: the helpers spin out and sleep again, so the batch wakes them.
        thread::sleep(SPIN_FOR);
        pool.run(&mut jobs, |j| *j += 1);
        assert_eq!(pool.wakes, first + 2);
        pool.run(&mut jobs, |j| *j += 1);
        assert_eq!(
            pool.wakes,
            first + 3,
            "a batch without a wake before it wakes the helpers itself"
        );
        assert_eq!(jobs, vec![3; 8]);
        let mut alone = RowPool::new(1);
        alone.wake();
        alone.run(&mut jobs, |j| *j += 1);
        assert_eq!(alone.wakes, 0, "a pool of one thread has nobody to wake");
    }

    #[test]
    fn a_jobs_panic_reaches_the_caller_and_the_pool_goes_on() {
        let mut pool = RowPool::new(2);
        for _ in 0..10 {
            let mut jobs: Vec<usize> = (0..64).collect();
            let result = catch_unwind(AssertUnwindSafe(|| {
                pool.wake();
                pool.run(&mut jobs, |j| assert_ne!(*j, 40, "job 40 fails"));
            }));
            assert!(
                result.is_err(),
                "the failing job's panic reaches the caller"
            );
            let mut again = vec![0u32; 9];
            pool.run(&mut again, |r| *r += 1);
            assert_eq!(again, vec![1; 9]);
        }
    }
}

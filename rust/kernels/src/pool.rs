//! The kernels' thread pool, built for a caller that alternates short products with its own
//! work on few cores (a Python forward calling one linear layer after another).
//!
//! [`for_each`] runs tasks `0..tasks` of a job, each exactly once, and returns when all are
//! done. The calling thread works on the job itself from the start: tasks are claimed one at a
//! time from a shared counter, so the caller never waits for a helper to wake up; a helper that
//! arrives late just finds fewer tasks left (or none). There are `threads() - 1` helper threads
//! (`RAYON_NUM_THREADS`, else the number of CPUs, like rayon's default). After a job a helper
//! spins for a short, bounded time (`HIERDRAFT_KERNEL_SPIN_US` microseconds, default
//! [`DEFAULT_SPIN_US`]), so that the next call finds it awake, then parks until a job comes.
//!
//! One job runs on the pool at a time: a call made while the pool is busy (from another thread,
//! or from inside a task) runs its tasks on its own thread alone. That keeps calls from several
//! threads at once free of deadlocks and of any waiting on each other. A task that panics stops
//! the job (remaining tasks are skipped); once no thread is inside the job any more, the first
//! panic resumes in the caller of [`for_each`], and the pool stays usable.
//!
//! # Safety argument
//! A job lives on the caller's stack; helpers reach it through one shared pointer. A helper
//! announces itself (`active += 1`) *before* it reads the pointer, and leaves (`active -= 1`)
//! after its last use of the job. The caller clears the pointer once every task is claimed,
//! then waits until `active` is 0 before it returns. All four operations are sequentially
//! consistent, so either a helper's read of the pointer comes after the clearing (it sees no
//! job), or its announcement comes before the clearing and therefore before the caller's reads
//! of `active`, which then wait for it to leave. Hence no helper touches a job after its
//! caller returned, and every write a task made happens before [`for_each`] returns.

use std::any::Any;
use std::hint;
use std::panic::{self, AssertUnwindSafe};
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::thread::{self, Thread};
use std::time::{Duration, Instant};

/// Microseconds a helper spins after a job before it parks (unless `HIERDRAFT_KERNEL_SPIN_US`
/// says otherwise).
pub(crate) const DEFAULT_SPIN_US: u64 = 50;
/// Environment variable overriding [`DEFAULT_SPIN_US`] (read once, when the pool starts).
const SPIN_ENV: &str = "HIERDRAFT_KERNEL_SPIN_US";
/// Environment variable giving the number of threads (rayon's, so both pools agree).
const THREADS_ENV: &str = "RAYON_NUM_THREADS";
/// Polls of the job counter between two looks at the clock while a helper spins.
const POLLS_PER_CLOCK_CHECK: u32 = 64;
/// Polls after which a caller waiting for helpers to leave its job yields its core instead.
const POLLS_BEFORE_YIELD: u32 = 1 << 12;

/// One call's tasks, shared by the threads working on them.
struct Job<'a> {
    task: &'a (dyn Fn(usize) + Sync),
    tasks: usize,
    /// The next unclaimed task.
    next: AtomicUsize,
    /// The first panic of a task, to resume in the caller.
    panic: Mutex<Option<Box<dyn Any + Send>>>,
}

impl Job<'_> {
    /// Claims and runs tasks until none is left. A panicking task ends the job: the others are
    /// no longer handed out, and its payload is kept for the caller.
    fn work(&self) {
        let run = AssertUnwindSafe(|| loop {
            let i = self.next.fetch_add(1, Ordering::Relaxed);
            if i >= self.tasks {
                return;
            }
            (self.task)(i);
        });
        if let Err(payload) = panic::catch_unwind(run) {
            self.next.fetch_max(self.tasks, Ordering::Relaxed);
            let mut first = self.panic.lock().unwrap_or_else(PoisonError::into_inner);
            first.get_or_insert(payload);
        }
    }
}

/// What the caller and the helpers of one pool share (see the module's safety argument).
struct Pool {
    /// Whether a job is running on the pool.
    busy: AtomicBool,
    /// The running job (null: none). The lifetime is the caller's, erased.
    job: AtomicPtr<Job<'static>>,
    /// Incremented for each job, so that waiting helpers see a new one.
    epoch: AtomicU64,
    /// Helpers between their announcement and their leaving.
    active: AtomicUsize,
    /// The helper threads (set once, right after they are started).
    helpers: OnceLock<Vec<Thread>>,
}

/// The process's pool, started on first use.
static GLOBAL: OnceLock<&'static Pool> = OnceLock::new();

fn global() -> &'static Pool {
    GLOBAL.get_or_init(|| {
        let spin = Duration::from_micros(env_number(SPIN_ENV).unwrap_or(DEFAULT_SPIN_US));
        let threads = env_number(THREADS_ENV)
            .and_then(|n| usize::try_from(n).ok())
            .filter(|&n| n > 0)
            .unwrap_or_else(|| thread::available_parallelism().map_or(1, |n| n.get()));
        Pool::start(threads, spin)
    })
}

fn env_number(name: &str) -> Option<u64> {
    std::env::var(name).ok()?.trim().parse().ok()
}

/// Threads a job runs on at most: the caller and the helpers.
pub(crate) fn threads() -> usize {
    global().threads()
}

/// Runs `task(i)` for every `i` in `0..tasks`, each exactly once, on the calling thread and the
/// helpers (see the module docs); returns when all have run. A panic of a task resumes here.
pub(crate) fn for_each(tasks: usize, task: &(dyn Fn(usize) + Sync)) {
    global().for_each(tasks, task);
}

impl Pool {
    /// A pool of `threads` threads counting the caller's (it lives as long as the process).
    fn start(threads: usize, spin: Duration) -> &'static Pool {
        let pool: &'static Pool = Box::leak(Box::new(Pool {
            busy: AtomicBool::new(false),
            job: AtomicPtr::new(ptr::null_mut()),
            epoch: AtomicU64::new(0),
            active: AtomicUsize::new(0),
            helpers: OnceLock::new(),
        }));
        // A helper that cannot be started is simply missing: the caller does its share.
        let helpers = (1..threads)
            .filter_map(|i| {
                thread::Builder::new()
                    .name(format!("hierdraft-kernel-{i}"))
                    .spawn(move || pool.helper(spin))
                    .ok()
                    .map(|handle| handle.thread().clone())
            })
            .collect();
        let _ = pool.helpers.set(helpers);
        pool
    }

    fn helpers(&self) -> &[Thread] {
        self.helpers.get().map_or(&[], Vec::as_slice)
    }

    fn threads(&self) -> usize {
        self.helpers().len() + 1
    }

    /// See [`for_each`].
    fn for_each(&self, tasks: usize, task: &(dyn Fn(usize) + Sync)) {
        if tasks <= 1
            || self.helpers().is_empty()
            || self
                .busy
                .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
                .is_err()
        {
            (0..tasks).for_each(task);
            return;
        }
        let job = Job {
            task,
            tasks,
            next: AtomicUsize::new(0),
            panic: Mutex::new(None),
        };
        self.job
            .store(ptr::from_ref(&job).cast_mut().cast(), Ordering::SeqCst);
        self.epoch.fetch_add(1, Ordering::SeqCst);
        for helper in self.helpers() {
            helper.unpark();
        }
        job.work();
        self.job.store(ptr::null_mut(), Ordering::SeqCst);
        let mut polls = 0u32;
        while self.active.load(Ordering::SeqCst) != 0 {
            if polls < POLLS_BEFORE_YIELD {
                polls += 1;
                hint::spin_loop();
            } else {
                thread::yield_now();
            }
        }
        self.busy.store(false, Ordering::Release);
        let panicked = job
            .panic
            .into_inner()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(payload) = panicked {
            panic::resume_unwind(payload);
        }
    }

    /// A helper's life: wait for a job, work on it, again.
    fn helper(&self, spin: Duration) {
        let mut seen = 0;
        loop {
            seen = self.wait_for_job(seen, spin);
            self.active.fetch_add(1, Ordering::SeqCst);
            let job = self.job.load(Ordering::SeqCst);
            // SAFETY: a non-null pointer is a job whose caller is still inside `for_each`, and
            // it stays there until this helper leaves (`active -= 1`, below): see the module
            // docs.
            if let Some(job) = unsafe { job.as_ref() } {
                job.work();
            }
            self.active.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// Spins for up to `spin`, then parks, until a job newer than `seen` is announced; returns
    /// its epoch. A caller unparks every helper after announcing a job, so a helper that parks
    /// just after the announcement still wakes (an earlier unpark makes the next park return
    /// at once).
    fn wait_for_job(&self, seen: u64, spin: Duration) -> u64 {
        let start = Instant::now();
        loop {
            for _ in 0..POLLS_PER_CLOCK_CHECK {
                let epoch = self.epoch.load(Ordering::SeqCst);
                if epoch != seen {
                    return epoch;
                }
                hint::spin_loop();
            }
            if start.elapsed() >= spin {
                break;
            }
        }
        loop {
            let epoch = self.epoch.load(Ordering::SeqCst);
            if epoch != seen {
                return epoch;
            }
            thread::park();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;

    /// Pools of 1 (the caller alone), 2, 3 and 5 threads, spinning or parking at once.
    fn pools() -> &'static [&'static Pool] {
        static POOLS: OnceLock<Vec<&'static Pool>> = OnceLock::new();
        POOLS.get_or_init(|| {
            [(1, 0), (2, 50), (2, 0), (3, 20), (5, 0)]
                .map(|(threads, spin)| Pool::start(threads, Duration::from_micros(spin)))
                .to_vec()
        })
    }

    fn run_counting(pool: &Pool, tasks: usize) -> Vec<u32> {
        let seen: Vec<AtomicU32> = (0..tasks).map(|_| AtomicU32::new(0)).collect();
        pool.for_each(tasks, &|i| {
            seen[i].fetch_add(1, Ordering::Relaxed);
        });
        seen.into_iter().map(AtomicU32::into_inner).collect()
    }

    #[test]
    fn every_task_runs_exactly_once_for_any_thread_count() {
        for pool in pools().iter().copied().chain([global()]) {
            for tasks in [0, 1, 2, 3, 7, 31, 64, 101, 1000] {
                for _ in 0..20 {
                    assert_eq!(
                        run_counting(pool, tasks),
                        vec![1; tasks],
                        "{tasks} tasks on {} threads",
                        pool.threads()
                    );
                }
            }
        }
        assert_eq!(pools()[0].threads(), 1);
        assert_eq!(pools()[4].threads(), 5);
    }

    #[test]
    fn calls_from_several_threads_at_once_complete() {
        for pool in pools().iter().copied().chain([global()]) {
            thread::scope(|s| {
                for t in 0..4 {
                    s.spawn(move || {
                        for round in 0..200 {
                            let tasks = 1 + (t * 37 + round * 11) % 50;
                            assert_eq!(run_counting(pool, tasks), vec![1; tasks]);
                        }
                    });
                }
            });
        }
    }

    #[test]
    fn a_task_may_call_the_pool_again() {
        for pool in pools().iter().copied().chain([global()]) {
            let seen: Vec<AtomicU32> = (0..9 * 5).map(|_| AtomicU32::new(0)).collect();
            pool.for_each(9, &|i| {
                pool.for_each(5, &|j| {
                    seen[i * 5 + j].fetch_add(1, Ordering::Relaxed);
                });
            });
            assert!(seen.iter().all(|c| c.load(Ordering::Relaxed) == 1));
        }
    }

    #[test]
    fn a_panicking_task_resumes_in_the_caller_and_the_pool_stays_usable() {
        for pool in pools().iter().copied().chain([global()]) {
            for bad in [0, 5, 63] {
                let result = panic::catch_unwind(|| {
                    pool.for_each(64, &|i| {
                        if i == bad {
                            panic!("task {i} failed");
                        }
                    });
                });
                let payload = result.expect_err("the panic must reach the caller");
                let message = payload
                    .downcast_ref::<String>()
                    .cloned()
                    .unwrap_or_default();
                assert_eq!(message, format!("task {bad} failed"));
                assert_eq!(run_counting(pool, 50), vec![1; 50]);
            }
        }
    }
}

//! Session threads: each runs its own single-threaded tokio runtime, and a
//! session lives on one of them from login to end.
//!
//! Why not the work-stealing runtime for sessions: relaying one statement
//! is a few microseconds of work between two socket waits. On tokio's
//! multi-threaded runtime, each time a session woke, an idle worker was
//! woken too, to look for work to steal, and went back to sleep: two
//! `futex` calls and a context switch per statement (strace on the
//! `pgbench -S` benchmark), costing the gateway more CPU than the relay
//! itself. A session pinned to one thread keeps its wake-ups on that thread.
//! Balance comes from placing each new session on the thread with the
//! fewest live ones. The rest of the gateway (API, recorder, catalog
//! watchers) stays on the main runtime.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::mpsc;

type Job = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A fixed set of threads that run sessions.
pub struct SessionThreads {
    threads: Vec<SessionThread>,
}

struct SessionThread {
    jobs: mpsc::UnboundedSender<Job>,
    live: Arc<AtomicUsize>,
}

/// Why a session could not be placed on a thread.
#[derive(Debug, thiserror::Error)]
pub enum SessionThreadError {
    /// The operating system refused a thread or a runtime.
    #[error("cannot start session thread {index}: {source}")]
    Start {
        /// Which thread.
        index: usize,
        /// The refusal.
        source: std::io::Error,
    },
    /// Every thread has stopped (only during shutdown).
    #[error("no session thread is running")]
    Stopped,
}

impl SessionThreads {
    /// Starts `count` threads (at least one).
    pub fn start(count: usize) -> Result<Self, SessionThreadError> {
        let mut threads = Vec::new();
        for index in 0..count.max(1) {
            let (jobs, mut rx) = mpsc::unbounded_channel::<Job>();
            // The runtime is built (and dropped) on its own thread: dropping
            // one inside another runtime's task panics.
            let (built_tx, built_rx) = std::sync::mpsc::channel();
            std::thread::Builder::new()
                .name(format!("portcullis-session-{index}"))
                .spawn(move || {
                    // Sockets and timers only: with the signal and process
                    // drivers on, every park also looked for orphaned child
                    // processes, a few percent of a session thread's time.
                    let runtime = match tokio::runtime::Builder::new_current_thread()
                        .enable_io()
                        .enable_time()
                        .build()
                    {
                        Ok(r) => r,
                        Err(e) => {
                            let _ = built_tx.send(Err(e));
                            return;
                        }
                    };
                    let _ = built_tx.send(Ok(()));
                    // Ends when every sender is gone; the owner waits for its
                    // sessions before dropping this set.
                    runtime.block_on(async move {
                        while let Some(job) = rx.recv().await {
                            tokio::spawn(job);
                        }
                    })
                })
                .map_err(|source| SessionThreadError::Start { index, source })?;
            match built_rx.recv() {
                Ok(Ok(())) => {}
                Ok(Err(source)) => return Err(SessionThreadError::Start { index, source }),
                Err(_) => {
                    return Err(SessionThreadError::Start {
                        index,
                        source: std::io::Error::other(
                            "the thread ended before its runtime started",
                        ),
                    })
                }
            }
            threads.push(SessionThread {
                jobs,
                live: Arc::new(AtomicUsize::new(0)),
            });
        }
        Ok(Self { threads })
    }

    /// Live sessions per thread, in thread order.
    pub fn live(&self) -> Vec<usize> {
        self.threads
            .iter()
            .map(|t| t.live.load(Ordering::Relaxed))
            .collect()
    }

    /// Runs `session` on the thread with the fewest live sessions. The
    /// future is first polled on that thread, so sockets it registers
    /// belong to that thread's runtime.
    pub fn spawn<F>(&self, session: F) -> Result<(), SessionThreadError>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let thread = self
            .threads
            .iter()
            .min_by_key(|t| t.live.load(Ordering::Relaxed))
            .ok_or(SessionThreadError::Stopped)?;
        let live = thread.live.clone();
        live.fetch_add(1, Ordering::Relaxed);
        let guard = LiveGuard(live);
        thread
            .jobs
            .send(Box::pin(async move {
                let _guard = guard;
                session.await;
            }))
            .map_err(|_| SessionThreadError::Stopped)
    }
}

/// Counts a session as live until it ends (or is dropped unstarted).
struct LiveGuard(Arc<AtomicUsize>);

impl Drop for LiveGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn sessions_spread_over_threads_and_run_on_them() {
        let threads = SessionThreads::start(2).expect("threads");
        let (release_tx, release_rx) = tokio::sync::watch::channel(false);
        let (names_tx, mut names_rx) = mpsc::unbounded_channel();
        for _ in 0..4 {
            let names = names_tx.clone();
            let mut release = release_rx.clone();
            threads
                .spawn(async move {
                    let name = std::thread::current().name().map(str::to_owned);
                    names.send(name).expect("send");
                    let _ = release.wait_for(|r| *r).await;
                })
                .expect("spawn");
        }
        let mut names = Vec::new();
        for _ in 0..4 {
            names.push(names_rx.recv().await.expect("name").expect("named thread"));
        }
        names.sort();
        assert_eq!(
            names,
            [
                "portcullis-session-0",
                "portcullis-session-0",
                "portcullis-session-1",
                "portcullis-session-1"
            ]
        );
        assert_eq!(threads.live(), [2, 2]);
        release_tx.send(true).expect("release");
        for _ in 0..200 {
            if threads.live() == [0, 0] {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("sessions still counted live: {:?}", threads.live());
    }
}

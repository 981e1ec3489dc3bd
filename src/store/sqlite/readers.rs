//! The read side of the SQLite backend: a fixed set of reader threads, each with its own
//! read-only connection (and so its own statement cache and page cache), fed by one queue.
//!
//! Before issue 15 every read was a `spawn_blocking` task taking a connection from a pool: under
//! load hundreds of blocking threads took turns on one core, and each read paid a thread hand-off
//! both ways. Here the number of threads is fixed (about one per core), a read costs one queue
//! push and one wake-up, and queued reads beyond [`QUEUE_DEPTH`] wait asynchronously for room,
//! so a burst costs memory for its futures, not threads or file descriptors.

use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender};
use rusqlite::Connection;
use tokio::sync::{oneshot, Semaphore};

use crate::store::{StoreError, StoreResult};

/// Reads that may wait for a reader thread before callers wait for room in the queue.
const QUEUE_DEPTH: usize = 1024;

/// Most reader threads, whatever the core count: each holds a connection and a page cache.
pub const MAX_READERS: usize = 8;

type ReadJob = Box<dyn FnOnce(&Connection) + Send>;

/// Hands reads to the reader threads. Dropping it ends them once the queue is empty.
pub struct Readers {
    queue: Sender<ReadJob>,
    /// One permit per place in the queue; a read holds one until a thread has taken it.
    room: Arc<Semaphore>,
}

impl Readers {
    /// Starts `threads` readers (at least one, at most [`MAX_READERS`]) on the database at
    /// `path`, each opening its connection with `open`. Fails when a connection cannot be opened.
    pub fn start(
        path: &Path,
        threads: usize,
        open: fn(&Path, bool) -> rusqlite::Result<Connection>,
    ) -> StoreResult<Readers> {
        let (queue, jobs) = crossbeam_channel::unbounded::<ReadJob>();
        for i in 0..threads.clamp(1, MAX_READERS) {
            let conn = open(path, true)
                .map_err(|e| StoreError::Backend(format!("opening a reader: {e}")))?;
            let jobs: Receiver<ReadJob> = jobs.clone();
            std::thread::Builder::new()
                .name(format!("sqlite-reader-{i}"))
                .spawn(move || {
                    // Ends when every sender (the store) is gone. A read that panics loses its
                    // answer (its caller sees an error), not the thread.
                    for job in jobs {
                        let _ = std::panic::catch_unwind(AssertUnwindSafe(|| job(&conn)));
                    }
                })
                .map_err(|e| StoreError::Backend(format!("starting a reader: {e}")))?;
        }
        Ok(Readers {
            queue,
            room: Arc::new(Semaphore::new(QUEUE_DEPTH)),
        })
    }

    /// Runs `f` on a reader thread and returns its result.
    pub async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> StoreResult<T> {
        let permit = self
            .room
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| StoreError::Backend(format!("reader queue: {e}")))?;
        let (reply, rx) = oneshot::channel();
        let job: ReadJob = Box::new(move |conn| {
            drop(permit);
            // A caller that went away no longer needs the answer.
            let _ = reply.send(f(conn));
        });
        self.queue
            .send(job)
            .map_err(|_| StoreError::Backend("readers stopped".into()))?;
        rx.await
            .map_err(|_| StoreError::Backend("reader dropped the request".into()))?
            .map_err(|e| StoreError::Backend(e.to_string()))
    }
}

/// About one reader per core: reads are short and CPU-bound once the pages are cached, so more
/// threads than cores only take turns.
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

//! The presence store task on async-std. What is said to Redis, and how,
//! is `culex-runtime`'s; this is the loop between the two channels.

use async_std::channel::{Receiver, Sender};
use culex_runtime::RedisSettings;
use culex_runtime::driver::{Event, StoreRequest};
use culex_runtime::store::{RedisLink, Scripts};

use crate::conn::AsyncStdOutbox;

/// Answers the broker task's requests until it goes away.
pub(crate) async fn run(
    settings: RedisSettings,
    requests: Receiver<StoreRequest>,
    events: Sender<Event<AsyncStdOutbox>>,
) {
    let scripts = Scripts::default();
    let mut link = RedisLink::new(async_std::task::sleep);
    while let Ok(request) = requests.recv().await {
        let reply = link.answer(&settings, &scripts, request).await;
        if events.send(Event::Store(reply)).await.is_err() {
            return;
        }
    }
}

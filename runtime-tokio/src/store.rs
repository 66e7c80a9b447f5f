//! The presence store task on tokio. What is said to Redis, and how, is
//! `culex-runtime`'s; this is the loop between the two channels.

use culex_runtime::RedisSettings;
use culex_runtime::driver::{Event, StoreRequest};
use culex_runtime::store::{RedisLink, Scripts};
use tokio::sync::mpsc;

use crate::conn::TokioOutbox;

/// Answers the broker task's requests until it goes away.
pub(crate) async fn run(
    settings: RedisSettings,
    mut requests: mpsc::UnboundedReceiver<StoreRequest>,
    events: mpsc::Sender<Event<TokioOutbox>>,
) {
    let scripts = Scripts::default();
    let mut link = RedisLink::new(tokio::time::sleep);
    while let Some(request) = requests.recv().await {
        let reply = link.answer(&settings, &scripts, request).await;
        if events.send(Event::Store(reply)).await.is_err() {
            return;
        }
    }
}

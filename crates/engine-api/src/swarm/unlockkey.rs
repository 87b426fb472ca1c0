//! `GET /swarm/unlockkey`: the key that unlocks a locked manager.
//!
//! Shoal has no autolock yet, so no key is ever set: a manager answers `{"UnlockKey":""}`
//! (the CLI then prints "no unlock key is set"); elsewhere moby's 503.

use serde::Serialize;

use super::cluster;
use crate::backend::Backend;
use crate::request::{Reply, Request, Result};

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct UnlockKey {
    unlock_key: String,
}

pub async fn handle(backend: &Backend, _request: Request) -> Result {
    // Only a manager answers (as in moby); its cluster says it is one.
    cluster(backend).await?;
    Reply::json(&UnlockKey {
        unlock_key: String::new(),
    })
}

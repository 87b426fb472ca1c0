//! `GET /swarm/unlockkey`: the key that unlocks a locked manager, `SWMKEY-1-…`, or `""` when
//! autolock is off (the CLI then prints "no unlock key is set"). Only a manager answers;
//! elsewhere moby's 503.

use serde::Serialize;
use shoal_api::v1::GetUnlockKeyRequest;

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
    let key = backend
        .call(async |mut c| c.get_unlock_key(GetUnlockKeyRequest {}).await)
        .await?
        .unlock_key;
    Reply::json(&UnlockKey {
        unlock_key: if key.is_empty() {
            String::new()
        } else {
            shoal_api::unlock_key::format(&key)
        },
    })
}

//! `GET /distribution/{image}/json`: a registry lookup of an image's digest and platforms.
//!
//! Shoal contacts no registry: each node's executor pulls the image it runs. So this answers
//! 501 saying so. The docker CLI asks before `service create/update` to pin the image by
//! digest; on any error it only prints its warning ("image … could not be accessed on a
//! registry to record its digest…") and goes on with the image as given (`--no-resolve-image`
//! skips the lookup and the warning).

use crate::backend::Backend;
use crate::error::EngineError;
use crate::request::{Request, Result};

pub async fn handle(_backend: &Backend, request: Request) -> Result {
    let segments = &request.segments;
    let image = segments[1..segments.len().saturating_sub(1)].join("/");
    Err(refusal(&image))
}

fn refusal(image: &str) -> EngineError {
    EngineError::not_implemented(format!(
        "Shoal does not contact registries, so image {image} is not resolved to a digest: each \
         node pulls the image as named (pass --no-resolve-image to skip this lookup)"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lookup_is_refused_naming_the_image() {
        let e = refusal("library/busybox:latest");
        assert_eq!(e.status, 501);
        assert!(e.message.contains("image library/busybox:latest"), "{e}");
    }
}

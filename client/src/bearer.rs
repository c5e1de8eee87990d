//! The bearer token every call carries: `authorization: Bearer <token>`, as the members' gate
//! expects. The CLI sends an administrator or site session token with it; a member sends its
//! peer token to other members and the administrator token when it joins by itself.

use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;

/// A token that cannot travel in a gRPC header.
#[derive(Debug, thiserror::Error)]
#[error("the token has characters a header cannot carry")]
pub struct BadToken;

/// Adds `authorization: Bearer <token>` to every call, or nothing without a token.
#[derive(Clone, Debug, Default)]
pub struct Bearer(Option<MetadataValue<Ascii>>);

impl Bearer {
    /// Sends `token` (trimmed; none: nothing) as the bearer of every call.
    pub fn new(token: Option<&str>) -> Result<Bearer, BadToken> {
        let value = token
            .map(|token| format!("Bearer {}", token.trim()).parse::<MetadataValue<Ascii>>())
            .transpose()
            .map_err(|_| BadToken)?;
        Ok(Bearer(value))
    }

    /// The `authorization` header's value, if there is a token.
    pub fn header(&self) -> Option<&MetadataValue<Ascii>> {
        self.0.as_ref()
    }
}

impl Interceptor for Bearer {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(token) = &self.0 {
            request.metadata_mut().insert("authorization", token.clone());
        }
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_header_carries_the_trimmed_token_or_nothing() {
        let mut bearer = Bearer::new(Some(" s3cret\n")).unwrap();
        let request = bearer.call(tonic::Request::new(())).unwrap();
        assert_eq!(request.metadata().get("authorization").unwrap(), "Bearer s3cret");
        let request = Bearer::new(None).unwrap().call(tonic::Request::new(())).unwrap();
        assert!(request.metadata().get("authorization").is_none());
        assert!(Bearer::new(Some("line\u{7f}break")).is_err());
    }
}

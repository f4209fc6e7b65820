//! Builds the Rego `input` document from an Envoy `CheckRequest`, in the shape OPA-Envoy
//! (opa-envoy-plugin) builds it, so policies written for OPA-Envoy run unchanged.
//!
//! The document has `attributes` (the request's `AttributeContext` in proto-JSON field names),
//! `parsed_path`, `parsed_query`, `parsed_body`, `truncated_body`, `version` and, when the
//! source peer has one, `source_principal`.
//!
//! Where we differ from OPA-Envoy on purpose (each closes a gap; see `docs/input-and-decisions.md`):
//! - the path is split on `/` before each segment is percent-decoded, so `%2F` cannot forge
//!   segments (`/a%2Fb/c` gives `["a/b","c"]`, OPA-Envoy gives `["a","b","c"]`);
//! - headers sent in `header_map` (Envoy `encode_raw_headers: true`) are merged into
//!   `attributes.request.http.headers` (repeated keys joined with `,`) and used for body parsing;
//! - a percent escape that decodes to invalid UTF-8 is a parse error rather than a broken string;
//! - multipart parts' content types are matched case-insensitively.
//!
//! Choices where OPA-Envoy's code and docs disagree: `request.time` is `{"seconds","nanos"}` (what
//! its code produces), `size`/`portValue` are JSON numbers, `rawBody` is base64.

mod attributes;
mod body;
mod headers;
mod http_request;
mod multipart;
mod needs;
mod obj;
mod path;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use envoy_types::pb::envoy::service::auth::v3::CheckRequest;
use prost_reflect::DescriptorPool;
use regorus::Value;

pub(crate) use body::HEADERS_READ as BODY_HEADERS;
pub use http_request::{check_request_from_http, HttpCheck};
pub use needs::InputNeeds;
use obj::Obj;
pub use path::{parse_path, parse_query, QueryError};

/// How the input document is built; fixed for the lifetime of a server.
#[derive(Debug, Clone, Default)]
pub struct InputOptions {
    /// Leave out `parsed_body` and `truncated_body` entirely (OPA-Envoy's `skip-request-body-parse`).
    pub skip_request_body_parse: bool,
    /// Descriptors used to decode `application/grpc` bodies; without them gRPC bodies give `null`.
    pub descriptors: Option<Arc<DescriptorPool>>,
    /// Build only what the policy can read ([`InputNeeds`]) when no decision log needs the whole
    /// document (`policy.prune_input`).
    pub prune: bool,
}

/// The request could not be parsed; answered with HTTP 400 `request_parse_error: <this>`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestParseError {
    /// A path segment has a bad percent escape.
    #[error("invalid request path: {0}")]
    Path(String),
    /// The query string cannot be parsed.
    #[error("invalid query string: {0}")]
    Query(#[from] QueryError),
    /// A JSON, form or multipart body cannot be parsed.
    #[error("{0}")]
    Body(String),
    /// The `content-length` header is not a number.
    #[error("invalid content-length header {0:?}")]
    ContentLength(String),
    /// A gRPC body does not fit the configured descriptors or the gRPC framing.
    #[error("invalid gRPC request: {0}")]
    Grpc(String),
}

/// Builds the whole `input` document for one CheckRequest.
///
/// Errors are request parse errors, which callers answer with
/// [`crate::decision::parse_error_response`] (HTTP 400), never with a policy decision.
pub fn build_input(req: &CheckRequest, opts: &InputOptions) -> Result<Value, RequestParseError> {
    build_input_for(req, opts, &InputNeeds::All)
}

/// Builds the parts of the `input` document in `needs` (what the policy in force can read).
///
/// The path, the query and the body are parsed whether or not the policy reads them, so a request
/// that OPA-Envoy answers with 400 gets 400 here too.
pub fn build_input_for(
    req: &CheckRequest,
    opts: &InputOptions,
    needs: &InputNeeds,
) -> Result<Value, RequestParseError> {
    let attrs = req.attributes.as_ref();
    let http = attrs
        .and_then(|a| a.request.as_ref())
        .and_then(|r| r.http.as_ref());
    let headers = http.map(headers::Headers::new);

    let attributes_value = match (attrs, needs.field("attributes")) {
        (Some(a), Some(n)) => {
            let headers_needs = n
                .field("request")
                .and_then(|n| n.field("http"))
                .and_then(|n| n.field("headers"));
            let merged_headers = headers
                .as_ref()
                .filter(|h| h.has_header_map())
                .zip(headers_needs)
                .map(|(h, n)| h.merged_value(n));
            Some(attributes::attribute_context(a, merged_headers, n))
        }
        (None, Some(_)) => Some(Value::new_object()),
        (_, None) => None,
    };

    let path_str = http.map_or("", |h| h.path.as_str());
    let segments = path::parse_path(path_str)?;
    let query = path::parse_query(path::raw_query(path_str))?;

    let mut o = Obj::new(needs);
    if !opts.skip_request_body_parse {
        let (parsed_body, truncated) = match (http, &headers) {
            (Some(h), Some(hs)) => body::parse_body(
                hs,
                &h.body,
                &h.raw_body,
                &segments,
                opts.descriptors.as_deref(),
            )?,
            _ => (Value::Null, false),
        };
        o.put_pruned(obj::key!("parsed_body"), parsed_body);
        o.put(obj::key!("truncated_body"), Value::Bool(truncated));
    }
    if let Some(p) = attrs.and_then(|a| a.source.as_ref()) {
        o.put_str(obj::key!("source_principal"), &p.principal);
    }
    if let Some(a) = attributes_value {
        o.insert(obj::key!("attributes"), a);
    }
    if o.field(obj::key!("parsed_path")).is_some() {
        o.insert(obj::key!("parsed_path"), path::parsed_path_value(&segments));
    }
    o.put_pruned(obj::key!("parsed_query"), query);
    o.put_pruned(obj::key!("version"), version());
    Ok(o.into_value())
}

fn version() -> Value {
    static VERSION: std::sync::LazyLock<Value> = std::sync::LazyLock::new(|| {
        let mut o = regorus::value::Object::new();
        o.insert(Value::from("ext_authz"), Value::from("v3"));
        o.insert(Value::from("encoding"), Value::from("protojson"));
        Value::from(o)
    });
    VERSION.clone()
}

/// Could not load a descriptor set for gRPC body decoding.
#[derive(Debug, thiserror::Error)]
pub enum DescriptorSetError {
    /// The file could not be read.
    #[error("cannot read proto descriptor set {path}: {source}")]
    Read {
        /// The file named in the configuration.
        path: PathBuf,
        /// Why reading failed.
        source: std::io::Error,
    },
    /// The bytes are not a valid binary `FileDescriptorSet`.
    #[error("{path} is not a valid binary FileDescriptorSet (make one with `protoc --include_imports --descriptor_set_out`): {source}")]
    Decode {
        /// The file named in the configuration.
        path: PathBuf,
        /// What the decoder reported.
        source: prost_reflect::DescriptorError,
    },
}

/// Loads a binary `FileDescriptorSet` (as written by `protoc --include_imports
/// --descriptor_set_out`) for decoding gRPC request bodies.
pub fn load_descriptor_set(path: &Path) -> Result<DescriptorPool, DescriptorSetError> {
    let bytes = std::fs::read(path).map_err(|source| DescriptorSetError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    DescriptorPool::decode(bytes.as_slice()).map_err(|source| DescriptorSetError::Decode {
        path: path.to_path_buf(),
        source,
    })
}

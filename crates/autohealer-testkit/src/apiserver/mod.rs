//! A fake kube-apiserver: a real HTTP server on 127.0.0.1 that serves the subset of
//! the Kubernetes API the healer and its simulation use, with the semantics a client
//! can observe (resourceVersions, conflicts, watches with bookmarks and 410 Gone,
//! patches, status subresources, server-side apply, evictions with PDBs), and the
//! refusals a client can observe (typed decoding under `fieldValidation`, each type's
//! validation).

mod http;
pub mod patch;
pub mod resources;
pub mod selectors;
pub mod store;
pub mod validation;

pub use http::{ApiServerOptions, FakeApiServer, Faults, RequestStats};
pub use store::{ApiError, Decoding, DeleteOptions, Store, TERMINATED_POD_GC_THRESHOLD, Written};
pub use validation::FieldValidation;

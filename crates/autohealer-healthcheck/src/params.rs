//! The shared parsing helpers under the names the check modules import them by.

pub use autohealer_params::{ParamError, did_you_mean, ensure_crypto_provider, kebab, parse_params};

//! Test helpers shared by the stage crates' schema tests: they compile the project's JSON
//! Schemas (the files in `schemas/` at the repository root, which the host applies to the
//! topics) and assert that documents do or do not validate against them.
//!
//! This crate is a `[dev-dependencies]` entry only, so it is never part of a wasm build.
//! Every helper panics with a message naming the schema when something is wrong, which is
//! what a test wants.
//!
//! ```
//! use schema_check::{assert_invalid, assert_valid};
//! use serde_json::json;
//!
//! // JSON text (e.g. a stage output's payload) or a `serde_json::Value`.
//! assert_valid("order.schema.json", r#"{"order_id":"o","customer_id":"c","items":[{"product_id":"p","quantity":1,"price":1}],"total":1}"#);
//! assert_invalid("order.schema.json", &json!({"order_id": "o"}));
//! ```

use std::borrow::Cow;
use std::fmt::Display;
use std::path::PathBuf;

use serde_json::Value;

/// The folder holding the JSON Schemas: `schemas/` at the repository root.
pub fn schemas_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../schemas")
}

/// Reads `schemas/<name>` as JSON (without compiling it).
///
/// # Panics
///
/// If the file cannot be read or is not JSON.
pub fn schema(name: &str) -> Value {
    let path = schemas_dir().join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name} is not JSON: {e}"))
}

/// Compiles `schemas/<name>` as a draft 2020-12 schema (formats checked).
///
/// # Panics
///
/// If the file cannot be read, is not JSON or does not compile.
pub fn validator(name: &str) -> jsonschema::Validator {
    jsonschema::draft202012::options()
        .should_validate_formats(true)
        .build(&schema(name))
        .unwrap_or_else(|e| panic!("{name} does not compile: {e}"))
}

/// The errors `schemas/<name>` reports for `instance`, each with its instance path; empty
/// when `instance` is valid.
///
/// # Panics
///
/// If the schema cannot be loaded (see [`validator`]) or `instance` is text that is not JSON.
pub fn errors<I: Instance + ?Sized>(name: &str, instance: &I) -> Vec<String> {
    let instance = instance.to_json();
    validator(name)
        .iter_errors(&instance)
        .map(|e| format!("{e} (at {})", e.instance_path()))
        .collect()
}

/// Asserts that `instance` (JSON text or a [`Value`]) is valid against `schemas/<name>`,
/// listing every error otherwise.
///
/// # Panics
///
/// If it is not, or as [`errors`] does.
#[track_caller]
pub fn assert_valid<I: Instance + ?Sized>(name: &str, instance: &I) {
    let errors = errors(name, instance);
    assert!(errors.is_empty(), "{name} rejects {instance}: {errors:#?}");
}

/// Asserts that `instance` (JSON text or a [`Value`]) is invalid against `schemas/<name>`
/// (the check has teeth).
///
/// # Panics
///
/// If it is valid, or as [`errors`] does.
#[track_caller]
pub fn assert_invalid<I: Instance + ?Sized>(name: &str, instance: &I) {
    assert!(
        !validator(name).is_valid(&instance.to_json()),
        "{name} accepts {instance} but should not"
    );
}

/// A document to check: JSON text (`str`, `String`) or an already parsed [`Value`].
/// Displaying it gives the text used in assertion messages.
pub trait Instance: Display {
    /// The document as a JSON value.
    ///
    /// # Panics
    ///
    /// If it is text that is not JSON.
    fn to_json(&self) -> Cow<'_, Value>;
}

impl Instance for str {
    fn to_json(&self) -> Cow<'_, Value> {
        Cow::Owned(serde_json::from_str(self).expect("payload is JSON"))
    }
}

impl Instance for String {
    fn to_json(&self) -> Cow<'_, Value> {
        self.as_str().to_json()
    }
}

impl Instance for Value {
    fn to_json(&self) -> Cow<'_, Value> {
        Cow::Borrowed(self)
    }
}

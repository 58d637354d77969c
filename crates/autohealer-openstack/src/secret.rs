/// A credential or token: its `Debug` and `Display` say only that it is there, so it
/// cannot reach a log line, an Event or an error message by accident.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }

    /// The value itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_empty() { "<empty>" } else { "<redacted>" })
    }
}

impl std::fmt::Display for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self, f)
    }
}

/// Only a string is a secret. Anything else is refused without its value: serde's
/// own message would quote it ("invalid type: integer `12345678`"), and config errors
/// reach logs, `autohealer validate` and the Events of a rejected hot reload.
impl<'de> serde::Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(SecretVisitor)
    }
}

struct SecretVisitor;

/// The message for a secret of the wrong type; `got` is the YAML kind, never the value.
pub fn wrong_type(got: &str) -> String {
    let hint = match got {
        "an integer" | "a number" | "a boolean" => "; put it in quotes",
        _ => "",
    };
    format!("expected a string, got {got} (value not shown: it is a secret){hint}")
}

impl SecretVisitor {
    fn refuse<T, E: serde::de::Error>(got: &str) -> Result<T, E> {
        Err(E::custom(wrong_type(got)))
    }
}

impl<'de> serde::de::Visitor<'de> for SecretVisitor {
    type Value = Secret;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a string")
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Secret, E> {
        Ok(Secret::new(v))
    }

    fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Secret, E> {
        Ok(Secret(v))
    }

    fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<Secret, E> {
        Self::refuse("a boolean")
    }

    fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<Secret, E> {
        Self::refuse("an integer")
    }

    fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<Secret, E> {
        Self::refuse("an integer")
    }

    fn visit_i128<E: serde::de::Error>(self, _: i128) -> Result<Secret, E> {
        Self::refuse("an integer")
    }

    fn visit_u128<E: serde::de::Error>(self, _: u128) -> Result<Secret, E> {
        Self::refuse("an integer")
    }

    fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<Secret, E> {
        Self::refuse("a number")
    }

    fn visit_bytes<E: serde::de::Error>(self, _: &[u8]) -> Result<Secret, E> {
        Self::refuse("bytes")
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<Secret, E> {
        Self::refuse("nothing")
    }

    fn visit_none<E: serde::de::Error>(self) -> Result<Secret, E> {
        Self::refuse("nothing")
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, _: A) -> Result<Secret, A::Error> {
        Self::refuse("a list")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, _: A) -> Result<Secret, A::Error> {
        Self::refuse("a map")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_of_the_wrong_type_is_refused_without_its_value() {
        for (v, got, text) in [
            (serde_json::json!(12345678), "an integer", "12345678"),
            (serde_json::json!(-12345678), "an integer", "12345678"),
            (serde_json::json!(1234.5678), "a number", "5678"),
            (serde_json::json!(["s3cr3t-in-a-list"]), "a list", "s3cr3t"),
            (serde_json::json!({"v": "s3cr3t-in-a-map"}), "a map", "s3cr3t"),
        ] {
            let e = serde_json::from_value::<Secret>(v).unwrap_err().to_string();
            assert!(e.contains(got) && e.contains("expected a string"), "{e}");
            assert!(!e.contains(text), "{e}");
        }
        let e = serde_json::from_value::<Secret>(serde_json::json!(true)).unwrap_err().to_string();
        assert!(e.contains("a boolean") && e.contains("put it in quotes"), "{e}");
        assert_eq!(serde_json::from_value::<Secret>(serde_json::json!("pw")).unwrap().expose(), "pw");
    }
}

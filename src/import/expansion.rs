//! How many nodes a YAML text makes once its aliases are expanded, counted before the tree is
//! built. An alias (`*a`) repeats its anchor's whole node, and serde_yaml builds each repeat:
//! a 300 KB text of 50,000 aliases of a 50,000-item list would make billions of values. The
//! count walks the same events the tree would be built from and stops at the budget, so it
//! costs at most that many steps, whatever the text.

use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use std::cell::Cell;
use std::fmt;

/// More nodes than this are refused. A Compose file of a few hundred services makes tens of
/// thousands.
pub const MAX_NODES: usize = 1_000_000;

/// Ok, or the error of a text whose expansion goes past [`MAX_NODES`] (or that is not YAML: the
/// parse that follows says where).
pub fn check(text: &str) -> Result<(), String> {
    let left = Cell::new(MAX_NODES);
    match Budget(&left).deserialize(serde_yaml::Deserializer::from_str(text)) {
        Err(_) if left.get() == 0 => Err(format!(
            "the file makes more than {MAX_NODES} values once its aliases (`*name`) are expanded; a Compose file \
             makes far fewer"
        )),
        _ => Ok(()),
    }
}

/// Counts each node it visits against what is left.
#[derive(Clone, Copy)]
struct Budget<'a>(&'a Cell<usize>);

impl Budget<'_> {
    fn spend<E: serde::de::Error>(self) -> Result<(), E> {
        match self.0.get() {
            0 => Err(E::custom("too many values")),
            n => {
                self.0.set(n - 1);
                Ok(())
            }
        }
    }
}

impl<'de> DeserializeSeed<'de> for Budget<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Budget<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<(), E> {
        self.spend()
    }
    fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<(), E> {
        self.spend()
    }
    fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<(), E> {
        self.spend()
    }
    fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<(), E> {
        self.spend()
    }
    fn visit_str<E: serde::de::Error>(self, _: &str) -> Result<(), E> {
        self.spend()
    }
    fn visit_unit<E: serde::de::Error>(self) -> Result<(), E> {
        self.spend()
    }
    fn visit_none<E: serde::de::Error>(self) -> Result<(), E> {
        self.spend()
    }
    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        self.spend()?;
        deserializer.deserialize_any(self)
    }
    fn visit_newtype_struct<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        self.spend()?;
        deserializer.deserialize_any(self)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        self.spend()?;
        while seq.next_element_seed(self)?.is_some() {}
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        self.spend()?;
        while map.next_key_seed(self)?.is_some() {
            map.next_value_seed(self)?;
        }
        Ok(())
    }
    fn visit_enum<A: serde::de::EnumAccess<'de>>(self, data: A) -> Result<(), A::Error> {
        // A tagged value (`!tag x`): the tag and its value.
        use serde::de::VariantAccess as _;
        self.spend()?;
        let ((), variant) = data.variant_seed(self)?;
        variant.newtype_variant_seed(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_compose_file_with_anchors_passes() {
        let text = "x-common: &common\n  restart: always\n  image: a:1\nservices:\n  a:\n    <<: *common\n  b:\n    <<: *common\n";
        assert_eq!(check(text), Ok(()));
    }

    /// 2,000 aliases of a 2,000-item list: four million values, refused after the first million.
    #[test]
    fn an_alias_bomb_is_refused_within_the_budget() {
        let items = vec!["x"; 2_000].join(", ");
        let aliases = vec!["*a"; 2_000].join(", ");
        let text = format!("x-a: &a [{items}]\nx-b: [{aliases}]\n");
        let started = std::time::Instant::now();
        let refused = check(&text).expect_err("refused");
        assert!(refused.contains("once its aliases"), "{refused}");
        eprintln!("refused in {:?}", started.elapsed());
    }
}

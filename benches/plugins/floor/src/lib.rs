//! `floor`: exports `check`, which reads the `x-api-key` header through the host's `header`
//! import and answers whether it is non-empty.
wit_bindgen::generate!({ path: "wit", world: "floor" });

struct Floor;

impl Guest for Floor {
    fn check() -> bool {
        header("x-api-key").is_some_and(|v| !v.is_empty())
    }
}

export!(Floor);

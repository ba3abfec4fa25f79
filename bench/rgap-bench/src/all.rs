//! placeholder
pub fn all() {}

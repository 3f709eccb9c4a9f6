mod lookup;
pub mod ops;
pub mod workflows;

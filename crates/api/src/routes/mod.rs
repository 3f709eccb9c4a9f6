pub mod ops;
pub mod workflows;

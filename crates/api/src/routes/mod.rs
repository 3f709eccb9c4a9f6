mod lookup;
pub mod ops;
pub mod steering;
pub mod workflows;

mod handle;
mod lookup;
pub mod ops;
pub mod steering;
pub mod stream;
pub mod workflows;

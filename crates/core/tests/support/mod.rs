pub mod histories;

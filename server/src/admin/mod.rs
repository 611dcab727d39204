//! What the admin API and the admin pages share: the views of the state ([`views`]), the
//! operations that change it ([`ops`]), and the pages' sessions ([`session`]).

pub mod ops;
pub mod session;
pub mod views;

//! Every outcome rule in one place: what an answer means (`classify`), when to try again
//! (`retry`, `denials`), and what becomes of each queue message.

pub mod classify;
pub mod denials;
pub mod retry;
pub mod settle;
pub mod supersede;
pub mod verdict;

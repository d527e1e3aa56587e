//! Private status tokens and typeable lookup codes: defined in `kyufu_domain::token` (the pipeline
//! writes them into emails too), re-exported here where intake issues and checks them.

pub use kyufu_domain::token::StatusTokens;

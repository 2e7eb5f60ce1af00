//! The protocols compiled into this binary, in one list: a new protocol
//! adds its vocabulary here (and its listener in `serve`), nothing else.

use portcullis_core::vocabulary::Vocabulary;

/// What each protocol adds to the policy language, for the schema every
/// policy set is validated against.
pub const VOCABULARIES: &[&Vocabulary] = &[
    &portcullis_pg_decide::vocabulary::SQL,
    &portcullis_proto_ssh::SSH,
];

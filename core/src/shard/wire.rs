//! The form shard messages take between processes (see `ShardMessage`).

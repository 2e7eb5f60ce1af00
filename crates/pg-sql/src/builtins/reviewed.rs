//! The reviewed part of the built-in classification: what the catalog's
//! volatility does not say. A name ending in `*` covers every built-in
//! starting with the rest. Adding a built-in to `WITHOUT_EFFECTS` needs the
//! argument that it neither acts nor reads past the policy; the test beside
//! the table checks every name here is a real built-in.

/// Built-ins that act or escape whatever their volatility, with why.
const EFFECTS: &[(&str, &str)] = &[
    // the database host's files and programs
    ("pg_read_file", "reads the server's files"),
    ("pg_read_file_old", "reads the server's files"),
    ("pg_read_binary_file", "reads the server's files"),
    ("pg_stat_file", "reads the server's files"),
    ("pg_ls_*", "lists the server's files"),
    ("pg_current_logfile", "reads the server's files"),
    ("pg_hba_file_rules", "reads the server's files"),
    ("pg_ident_file_mappings", "reads the server's files"),
    ("pg_show_all_file_settings", "reads the server's files"),
    // large objects live outside every table's policy
    ("lo_*", "reads or writes large objects"),
    ("loread", "reads large objects"),
    ("lowrite", "writes large objects"),
    // other sessions and the server itself
    ("pg_cancel_backend", "signals another session"),
    ("pg_terminate_backend", "signals another session"),
    ("pg_reload_conf", "signals the server"),
    ("pg_rotate_logfile", "signals the server"),
    ("pg_rotate_logfile_old", "signals the server"),
    ("pg_log_backend_memory_contexts", "signals another session"),
    ("pg_promote", "promotes a standby"),
    ("pg_stat_get_activity", "reads other sessions' statements"),
    ("pg_stat_get_backend_*", "reads other sessions' activity"),
    // settings: set_config is decided as the SET it is when its arguments
    // are constants; current_setting of a non-secret constant name is pure
    ("set_config", "changes a setting"),
    ("current_setting", "reads a setting that may be secret"),
    (
        "pg_show_all_settings",
        "reads every setting, secret ones included",
    ),
    // SQL text or a relation named by a string runs past the policy
    ("query_to_xml", "runs SQL given as text"),
    ("query_to_xml_and_xmlschema", "runs SQL given as text"),
    ("query_to_xmlschema", "runs SQL given as text"),
    ("cursor_to_xml", "reads a cursor by name"),
    ("cursor_to_xmlschema", "reads a cursor by name"),
    ("table_to_xml*", "reads a table named by a string"),
    ("schema_to_xml*", "reads every table of a schema"),
    ("database_to_xml*", "reads every table of the database"),
    ("ts_stat", "runs SQL given as text"),
    ("ts_rewrite", "runs SQL given as text"),
    // replication, backups and maintenance
    (
        "pg_create_logical_replication_slot",
        "administers replication",
    ),
    (
        "pg_create_physical_replication_slot",
        "administers replication",
    ),
    (
        "pg_copy_logical_replication_slot",
        "administers replication",
    ),
    (
        "pg_copy_physical_replication_slot",
        "administers replication",
    ),
    ("pg_drop_replication_slot", "administers replication"),
    ("pg_replication_slot_advance", "administers replication"),
    ("pg_logical_*", "reads or writes the change stream"),
    ("pg_replication_origin_*", "administers replication"),
    ("pg_backup_start", "administers backups"),
    ("pg_backup_stop", "administers backups"),
    ("pg_switch_wal", "administers the WAL"),
    ("pg_create_restore_point", "administers the WAL"),
    ("pg_wal_replay_pause", "administers recovery"),
    ("pg_wal_replay_resume", "administers recovery"),
    ("pg_export_snapshot", "exports a snapshot"),
    ("pg_import_system_collations", "changes the catalog"),
    ("pg_nextoid", "changes the catalog"),
    ("pg_stop_making_pinned_objects", "changes the catalog"),
    ("pg_extension_config_dump", "changes the catalog"),
    ("binary_upgrade_*", "changes the catalog"),
    ("pg_stat_reset*", "resets statistics"),
    ("pg_stat_force_next_flush", "writes statistics"),
    ("brin_summarize_new_values", "writes an index"),
    ("brin_summarize_range", "writes an index"),
    ("brin_desummarize_range", "writes an index"),
    ("gin_clean_pending_list", "writes an index"),
    // locks, sequences, notifications, time and transaction ids
    ("pg_advisory_*", "takes or releases advisory locks"),
    ("pg_try_advisory_*", "takes advisory locks"),
    ("nextval", "advances a sequence"),
    ("setval", "sets a sequence"),
    ("pg_sequence_last_value", "reads a sequence by oid"),
    ("pg_notify", "sends a notification"),
    ("pg_sleep", "sleeps (a timing channel)"),
    ("pg_sleep_for", "sleeps (a timing channel)"),
    ("pg_sleep_until", "sleeps (a timing channel)"),
    ("txid_current", "assigns a transaction id"),
    ("pg_current_xact_id", "assigns a transaction id"),
];

/// Volatile built-ins that neither act nor read past the policy: clocks,
/// randomness, sizes and status of the server and of this session.
const WITHOUT_EFFECTS: &[&str] = &[
    "clock_timestamp",
    "timeofday",
    "random",
    "setseed",
    "gen_random_uuid",
    "currval",
    "lastval",
    "current_query",
    "pg_blocking_pids",
    "pg_safe_snapshot_blocking_pids",
    "pg_isolation_test_session_is_blocked",
    "pg_lock_status",
    "pg_prepared_xact",
    "pg_is_in_recovery",
    "pg_jit_available",
    "pg_notification_queue_usage",
    "pg_relation_size",
    "pg_table_size",
    "pg_indexes_size",
    "pg_total_relation_size",
    "pg_database_size",
    "pg_tablespace_size",
    "pg_partition_tree",
    "pg_partition_ancestors",
    "pg_collation_actual_version",
    "pg_database_collation_actual_version",
    "pg_current_wal_lsn",
    "pg_current_wal_flush_lsn",
    "pg_current_wal_insert_lsn",
    "pg_last_wal_receive_lsn",
    "pg_last_wal_replay_lsn",
    "pg_last_xact_replay_timestamp",
    "pg_is_wal_replay_paused",
    "pg_get_wal_replay_pause_state",
    "pg_last_committed_xact",
    "pg_xact_commit_timestamp",
    "pg_xact_commit_timestamp_origin",
    "pg_xact_status",
    "txid_status",
    "pg_control_checkpoint",
    "pg_control_init",
    "pg_control_recovery",
    "pg_control_system",
    "pg_get_backend_memory_contexts",
    "pg_get_shmem_allocations",
    "pg_get_multixact_members",
    "pg_get_wal_resource_managers",
    "pg_stat_get_xact_*",
    "pg_stat_have_stats",
    "pg_stat_get_recovery_prefetch",
    "pg_stat_clear_snapshot",
    "amvalidate",
];

fn matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => pattern == name,
    }
}

/// Why the built-in `name` counts as acting, if the review says it does.
pub(super) fn effect_of(name: &str) -> Option<&'static str> {
    EFFECTS
        .iter()
        .find(|(pattern, _)| matches(pattern, name))
        .map(|(_, why)| *why)
}

/// Whether the volatile built-in `name` was reviewed as acting on nothing.
pub(super) fn is_volatile_without_effects(name: &str) -> bool {
    WITHOUT_EFFECTS.iter().any(|p| matches(p, name))
}

#[cfg(test)]
pub(super) fn all_names() -> impl Iterator<Item = &'static str> {
    EFFECTS
        .iter()
        .map(|(n, _)| *n)
        .chain(WITHOUT_EFFECTS.iter().copied())
}

//! Every limit of the domain, as named constants with their unit last.
//!
//! Hitting a limit is a clear error (`Rejection::InvalidArgument` or `Rejection::LimitReached`),
//! never a silent truncation.

/// Latest time any time field may name, in ms since the Unix epoch (9999-12-31T23:59:59.999Z):
/// a client's -1 sent as an unsigned 64-bit value is refused, never kept as a date.
pub const TIME_MS_MAX: u64 = 253_402_300_799_999;
/// Longest caller address recorded with a failed authentication, in characters.
pub const SOURCE_CHARS_MAX: usize = 64;
/// Smallest valid site id.
pub const SITE_ID_MIN: u32 = 1;
/// Largest valid site id (the vendor's Multi-Site range).
pub const SITE_ID_MAX: u32 = 999;
/// Most sites one collective holds.
pub const SITES_MAX: usize = 1_000;
/// Most users one collective holds.
pub const USERS_MAX: usize = 2_000_000;
/// Most workgroups one collective holds.
pub const WORKGROUPS_MAX: usize = 100_000;
/// Most entries in the status catalog.
pub const STATUSES_MAX: usize = 1_000;
/// Longest site, workgroup or display name, in characters.
pub const NAME_CHARS_MAX: usize = 128;
/// Longest username, in characters.
pub const USERNAME_CHARS_MAX: usize = 64;
/// Longest email address, in characters.
pub const EMAIL_CHARS_MAX: usize = 254;
/// Shortest extension, in digits.
pub const EXTENSION_DIGITS_MIN: usize = 2;
/// Longest extension, in digits.
pub const EXTENSION_DIGITS_MAX: usize = 15;
/// Longest phone number after normalisation, in characters.
pub const PHONE_CHARS_MAX: usize = 32;
/// Longest note-id dial string, in characters.
pub const DIAL_STRING_CHARS_MAX: usize = 16;
/// Most server host names per site.
pub const SITE_SERVERS_MAX: usize = 8;
/// Longest host name, in characters.
pub const HOST_CHARS_MAX: usize = 253;
/// Longest presence detail text, in characters.
pub const DETAIL_CHARS_MAX: usize = 256;
/// Longest status key or display message, in characters.
pub const STATUS_KEY_CHARS_MAX: usize = 64;
/// Most skills per user or per workgroup requirement.
pub const SKILLS_PER_USER_MAX: usize = 64;
/// Longest skill name, in characters.
pub const SKILL_NAME_CHARS_MAX: usize = 64;
/// Lowest skill level.
pub const SKILL_LEVEL_MIN: u32 = 1;
/// Highest skill level.
pub const SKILL_LEVEL_MAX: u32 = 100;
/// Most licences per user.
pub const LICENCES_PER_USER_MAX: usize = 32;
/// Most workgroups one user belongs to.
pub const WORKGROUPS_PER_USER_MAX: usize = 256;
/// Most members in one workgroup.
pub const MEMBERS_PER_WORKGROUP_MAX: usize = 100_000;
/// Most concurrent interactions of one user.
pub const INTERACTIONS_PER_USER_MAX: usize = 32;
/// Longest interaction id, in characters.
pub const INTERACTION_ID_CHARS_MAX: usize = 128;
/// Longest password, in bytes (before hashing at the edge).
pub const PASSWORD_BYTES_MAX: usize = 256;
/// Most results one directory search or list returns.
pub const SEARCH_RESULTS_MAX: usize = 10_000;
/// Most elements in one inter-site message.
pub const MESSAGE_ELEMENTS_MAX: usize = 1_024;
/// Largest inter-site message (elements, object id and event id), in bytes.
pub const MESSAGE_BYTES_MAX: u64 = 256 << 10;
/// Longest object id or event id, in characters.
pub const HANDLER_ID_CHARS_MAX: usize = 128;
/// Default bound of one site's queue, in messages.
pub const SITE_QUEUE_MESSAGES_DEFAULT: u64 = 100_000;
/// Default bound of one site's queue, in bytes.
pub const SITE_QUEUE_BYTES_DEFAULT: u64 = 256 << 20;
/// Highest configurable bound of one site's queue, in messages.
pub const SITE_QUEUE_MESSAGES_MAX: u64 = 10_000_000;
/// Highest configurable bound of one site's queue, in bytes.
pub const SITE_QUEUE_BYTES_MAX: u64 = 4 << 30;
/// Most message ids in one acknowledgement.
pub const ACK_IDS_MAX: usize = 10_000;
/// Most open requests from one site.
pub const OPEN_REQUESTS_PER_SITE_MAX: usize = 10_000;
/// A timed request stays open this long past its timeout (a late response is still refused
/// cleanly rather than queued nowhere).
pub const REQUEST_GRACE_MS: u64 = 10_000;
/// Longest request timeout, in ms. A request sent without a timeout (0: the requester waits
/// as long as it likes) still leaves the state after this much time plus the grace period.
pub const REQUEST_TIMEOUT_MS_MAX: u64 = 24 * 3_600_000;
/// Longest note name or attribute name, in characters.
pub const NOTE_NAME_CHARS_MAX: usize = 128;
/// Most notes per site.
pub const NOTES_PER_SITE_MAX: usize = 100_000;
/// Most attributes per note.
pub const NOTE_ATTRIBUTES_MAX: usize = 256;
/// Most values in one note attribute.
pub const NOTE_ATTRIBUTE_VALUES_MAX: usize = 10_000;
/// Longest string value in a note attribute or message, in bytes.
pub const STRING_VALUE_BYTES_MAX: usize = 64 << 10;
/// Longest note time to live, in minutes (one year).
pub const NOTE_TTL_MINUTES_MAX: u32 = 525_600;
/// Most interactions waiting for or holding an agent (routing, queued, reserved, active).
pub const INTERACTIONS_OPEN_MAX: usize = 1_000_000;
/// Finished interactions kept, with their decisions, for `explain` and idempotent retries; the
/// oldest go first.
pub const INTERACTIONS_FINISHED_RETAINED: usize = 100_000;
/// Decisions kept per interaction (the most recent).
pub const DECISIONS_PER_INTERACTION_MAX: usize = 16;
/// Agents remembered per interaction as having declined it (they are not offered it again).
pub const DECLINED_AGENTS_MAX: usize = 64;
/// Highest interaction priority (0 is the lowest).
pub const PRIORITY_MAX: u32 = 100;
/// When at most this many agents become eligible at once, a queue ranks just them; more, and
/// it asks the index (the same answer, as agents eligible before match no queued interaction).
pub const FRESH_RANKED_DIRECTLY_MAX: usize = 32;

//! The status catalog: the statuses a user can be in, seeded with the vendor's table.

use serde::{Deserialize, Serialize};

mod rules;

/// The group a status belongs to; routing and statistics read the group, not the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum StatusGroup {
    /// Ready for work.
    Available,
    /// Not reachable.
    Unavailable,
    /// On a break.
    Break,
    /// In training.
    Training,
    /// Doing follow-up work.
    FollowUp,
}

impl StatusGroup {
    /// Every group, in display order.
    pub const ALL: [StatusGroup; 5] = [
        StatusGroup::Available,
        StatusGroup::Unavailable,
        StatusGroup::Break,
        StatusGroup::Training,
        StatusGroup::FollowUp,
    ];

    /// The group's name as the API spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            StatusGroup::Available => "Available",
            StatusGroup::Unavailable => "Unavailable",
            StatusGroup::Break => "Break",
            StatusGroup::Training => "Training",
            StatusGroup::FollowUp => "FollowUp",
        }
    }

    /// Parses a group name, case-insensitively.
    pub fn parse(text: &str) -> Option<StatusGroup> {
        StatusGroup::ALL.into_iter().find(|group| group.as_str().eq_ignore_ascii_case(text))
    }
}

/// One entry of the status catalog.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusDef {
    /// Unique key, e.g. `Available` or `At Lunch`.
    pub key: String,
    /// Message shown to people.
    pub message: String,
    /// The group.
    pub group: StatusGroup,
    /// Users may pick it themselves.
    pub user_selectable: bool,
    /// Survives logout and restarts.
    pub persistent: bool,
    /// Do not disturb.
    pub do_not_disturb: bool,
    /// Setting it requires an `until` date.
    pub requires_date: bool,
    /// Setting it requires an `until` time.
    pub requires_time: bool,
    /// The agent may be offered ACD interactions while in it.
    pub acd_available: bool,
}

impl StatusDef {
    /// Whether setting this status needs an `until`.
    pub fn requires_until(&self) -> bool {
        self.requires_date || self.requires_time
    }
}

/// Status a new user starts in, and the fallback when nothing persistent was ever set.
pub const STATUS_INITIAL: &str = "Available";
/// Status set when an agent does not answer an offered interaction.
pub const STATUS_AGENT_NOT_ANSWERING: &str = "AcdAgentNotAnswering";

/// One row of the vendor's table: key, message, group, user selectable, persistent, do not
/// disturb, requires date, requires time, ACD available.
type CatalogRow = (&'static str, &'static str, StatusGroup, bool, bool, bool, bool, bool, bool);

/// The catalog a new collective starts with: the vendor's table (seeds/status-aggregator.txt).
pub fn seed_catalog() -> Vec<StatusDef> {
    use StatusGroup::*;
    // key, message, group, selectable, persistent, dnd, date, time, acd
    let rows: [CatalogRow; 36] = [
        ("AcdAgentNotAnswering", "ACD - Agent Not Answering", Unavailable, false, false, true, false, false, false),
        ("At a training session", "At a Training Session", Training, true, true, true, true, true, false),
        ("At Customer Site", "At Customer Site", Unavailable, true, true, true, true, true, false),
        ("At Lunch", "At Lunch", Break, true, true, true, false, true, false),
        ("At Play", "At Play", Break, true, true, true, false, false, false),
        ("Available", "Available", Available, true, true, false, false, false, true),
        ("Available, Callback", "Available, Callback", Available, true, false, false, false, false, true),
        ("Available, Follow-Me", "Available, Follow-Me", Available, true, true, false, true, true, true),
        ("Available, Forward", "Available, Forward", Available, true, true, false, false, false, true),
        ("Available, No ACD", "Available, No ACD", Available, true, true, false, false, false, false),
        ("Available, Researching", "Available, Researching", Available, false, true, false, false, true, true),
        ("Available, WAH", "Available, WAH", Available, true, true, false, false, false, true),
        ("Awaiting Callback", "Awaiting Callback", Unavailable, false, true, true, false, true, false),
        ("Away from desk", "Away from desk.", Unavailable, true, true, true, false, false, false),
        ("Bank Holiday", "Bank Holiday", Unavailable, true, true, true, true, false, false),
        ("Campaign Call", "Campaign Call", Available, false, true, false, false, true, true),
        ("Code Red", "Code Red", Unavailable, true, false, false, false, false, false),
        ("Do Not disturb", "Do Not Disturb", Unavailable, true, true, true, false, false, false),
        (
            "Do Not Disturb, awaiting call",
            "Do Not Disturb, awaiting call",
            Available,
            true,
            false,
            false,
            false,
            true,
            false,
        ),
        ("Follow Up", "Follow Up", FollowUp, false, false, true, false, false, false),
        ("Gone Home", "Gone Home", Unavailable, true, true, true, false, false, false),
        ("In a meeting", "In a Meeting", Unavailable, true, true, true, true, true, false),
        ("In the Shower", "In the shower", Unavailable, true, true, true, false, false, false),
        ("Medical Appointment", "Medical Appointment", Unavailable, true, true, true, true, true, false),
        ("On a Conference Call", "On a Conference Call", Unavailable, true, true, true, false, true, false),
        ("On Break", "On Break", Break, true, true, true, false, false, false),
        ("On Other Call", "On Other Call", Available, true, true, true, false, true, false),
        ("On Vacation", "On Vacation", Unavailable, true, true, true, true, false, false),
        ("Out of the office", "Out of the Office", Unavailable, true, true, true, true, true, false),
        ("Out of town", "Out of Town", Unavailable, true, true, true, true, true, false),
        ("Remote Site", "South Florida Employee", Unavailable, true, true, true, false, false, false),
        ("Researching", "Researching", FollowUp, true, true, false, false, false, false),
        ("Sick at home", "Sick at Home", Unavailable, true, true, true, false, false, false),
        ("Station Not Available", "Station Not Available", Unavailable, false, false, true, false, false, false),
        ("Support Call Back", "Support Call Back", FollowUp, true, false, false, false, false, false),
        ("Support Callback", "Support Callback", FollowUp, false, false, false, false, false, false),
    ];
    rows.into_iter()
        .map(
            |(
                key,
                message,
                group,
                user_selectable,
                persistent,
                do_not_disturb,
                requires_date,
                requires_time,
                acd_available,
            )| StatusDef {
                key: key.to_string(),
                message: message.to_string(),
                group,
                user_selectable,
                persistent,
                do_not_disturb,
                requires_date,
                requires_time,
                acd_available,
            },
        )
        .collect()
}

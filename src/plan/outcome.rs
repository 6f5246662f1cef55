//! [`ExitKind`]: what kind of end a command came to, as every layer's error says it. The
//! numbers are `vm-cli`'s documented exit codes; [`ExitKind::code`] is the one place that
//! maps a kind to its number.

/// How a command ended, from the host's point of view. Each error type of the layers above
/// (`PassthroughError`, `MdevError`, `ManagerError`, `LaunchError`) tells its kind; the CLI
/// turns it into the exit code with [`ExitKind::code`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExitKind {
    /// Success (0).
    Ok,
    /// The host could not be read, or another failure (1).
    Failed,
    /// Bad flags or arguments: an unknown flag, a bad PCI address, mode or UUID (2).
    Usage,
    /// Nothing suitable or refused: no GPU mode available, a refusal, no instance left, a
    /// busy group or parent (3). Nothing was changed.
    Unavailable,
    /// A host change failed and was undone: the host is as it was (4).
    Undone,
    /// A host change failed and could not be undone fully; `vm-cli gpu restore` finishes
    /// the undo (5).
    LeftChanges,
}

impl ExitKind {
    /// The process exit code: 0, 1, 2, 3, 4 or 5 (README, "Exit codes").
    pub const fn code(self) -> i32 {
        match self {
            ExitKind::Ok => 0,
            ExitKind::Failed => 1,
            ExitKind::Usage => 2,
            ExitKind::Unavailable => 3,
            ExitKind::Undone => 4,
            ExitKind::LeftChanges => 5,
        }
    }

    /// The kind of a failed plan: undone fully (`true`) or not.
    pub const fn of_undo(complete: bool) -> Self {
        if complete {
            ExitKind::Undone
        } else {
            ExitKind::LeftChanges
        }
    }
}

#[cfg(test)]
mod tests {
    use super::ExitKind;

    #[test]
    fn codes_are_the_documented_ones() {
        let all = [
            ExitKind::Ok,
            ExitKind::Failed,
            ExitKind::Usage,
            ExitKind::Unavailable,
            ExitKind::Undone,
            ExitKind::LeftChanges,
        ];
        let codes: Vec<i32> = all.iter().map(|k| k.code()).collect();
        assert_eq!(codes, [0, 1, 2, 3, 4, 5]);
    }
}

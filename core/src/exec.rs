//! Bounds of an exec session (issue 13), checked the same way by the apiserver (which
//! proxies) and the node agent (which runs the command): the command's size, each stdin
//! message, the terminal size. Pure.

use kube_lite_proto::v1::{ExecRequest, ExecStart, TerminalSize};

/// Most arguments a command may have.
pub const MAX_EXEC_ARGS: usize = 1024;
/// Most bytes of all arguments together (Linux' ARG_MAX is larger; a command line
/// beyond this is not something a person types).
pub const MAX_EXEC_COMMAND_BYTES: usize = 128 << 10;
/// Most stdin bytes in one request message.
pub const MAX_EXEC_STDIN_CHUNK: usize = 1 << 20;
/// Output is sent in chunks of at most this many bytes.
pub const EXEC_OUTPUT_CHUNK: usize = 32 << 10;
/// Largest request message either side decodes (a stdin chunk and its framing).
pub const MAX_EXEC_MESSAGE_BYTES: usize = MAX_EXEC_STDIN_CHUNK + MAX_EXEC_COMMAND_BYTES + 4096;
/// Exec sessions one node agent runs at a time (more are refused, RESOURCE_EXHAUSTED).
pub const MAX_EXEC_SESSIONS: usize = 64;

/// `(field, reason)` of the first bound a start message breaks.
pub fn check_start(s: &ExecStart) -> Result<(), (&'static str, String)> {
    if s.name.is_empty() {
        return Err(("start.name", "the pod name is required".into()));
    }
    if s.command.is_empty() || s.command[0].is_empty() {
        return Err((
            "start.command",
            "a command is required (kubectl-lite exec POD -- CMD...)".into(),
        ));
    }
    if s.command.len() > MAX_EXEC_ARGS {
        return Err((
            "start.command",
            format!(
                "{} arguments; at most {MAX_EXEC_ARGS} are allowed",
                s.command.len()
            ),
        ));
    }
    let bytes: usize = s.command.iter().map(|a| a.len() + 1).sum();
    if bytes > MAX_EXEC_COMMAND_BYTES {
        return Err((
            "start.command",
            format!("{bytes} bytes; at most {MAX_EXEC_COMMAND_BYTES} are allowed"),
        ));
    }
    if let Some(i) = s.command.iter().position(|a| a.contains('\0')) {
        return Err(("start.command", format!("argument {i} contains a NUL byte")));
    }
    if let Some(sz) = &s.size {
        check_size("start.size", sz)?;
    }
    Ok(())
}

/// Bounds of a later message (stdin chunk, resize); a second start is refused.
pub fn check_request(r: &ExecRequest) -> Result<(), (&'static str, String)> {
    if r.start.is_some() {
        return Err((
            "start",
            "only the first message of a session carries start".into(),
        ));
    }
    if r.stdin.len() > MAX_EXEC_STDIN_CHUNK {
        return Err((
            "stdin",
            format!(
                "{} bytes in one message; at most {MAX_EXEC_STDIN_CHUNK} are allowed",
                r.stdin.len()
            ),
        ));
    }
    if let Some(sz) = &r.resize {
        check_size("resize", sz)?;
    }
    Ok(())
}

fn check_size(field: &'static str, s: &TerminalSize) -> Result<(), (&'static str, String)> {
    if s.width > u16::MAX as u32 || s.height > u16::MAX as u32 {
        return Err((
            field,
            format!(
                "{}x{} is larger than {}x{}",
                s.width,
                s.height,
                u16::MAX,
                u16::MAX
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn start(cmd: &[&str]) -> ExecStart {
        ExecStart {
            name: "web".into(),
            command: cmd.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn bounds_name_the_field() {
        assert!(check_start(&start(&["sh", "-c", "id"])).is_ok());
        assert_eq!(check_start(&start(&[])).unwrap_err().0, "start.command");
        assert_eq!(check_start(&start(&[""])).unwrap_err().0, "start.command");
        let many: Vec<&str> = vec!["x"; MAX_EXEC_ARGS + 1];
        assert!(check_start(&start(&many))
            .unwrap_err()
            .1
            .contains("1025 arguments"));
        let big = "x".repeat(MAX_EXEC_COMMAND_BYTES);
        assert!(check_start(&start(&["echo", &big]))
            .unwrap_err()
            .1
            .contains("bytes"));
        assert!(check_start(&start(&["a\0b"]))
            .unwrap_err()
            .1
            .contains("NUL"));
        let mut s = start(&["sh"]);
        s.name.clear();
        assert_eq!(check_start(&s).unwrap_err().0, "start.name");
        s.name = "web".into();
        s.size = Some(TerminalSize {
            width: 70000,
            height: 24,
        });
        assert_eq!(check_start(&s).unwrap_err().0, "start.size");
        let r = ExecRequest {
            stdin: vec![0; MAX_EXEC_STDIN_CHUNK + 1],
            ..Default::default()
        };
        assert_eq!(check_request(&r).unwrap_err().0, "stdin");
        let r = ExecRequest {
            start: Some(start(&["sh"])),
            ..Default::default()
        };
        assert_eq!(check_request(&r).unwrap_err().0, "start");
        assert!(check_request(&ExecRequest::default()).is_ok());
    }
}

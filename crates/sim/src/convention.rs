//! What a simulated container "does", read from its command line.
//!
//! A simulated node runs no processes, so it reads a container's `command` + `args` (or `args`
//! alone when `command` is empty) and recognises a few simple programs:
//!
//! - `true`, `false`, `exit N` (through `sh -c`/`bash -c`), `:`, `echo ...` and `printf ...`
//!   run instantly with their usual exit status;
//! - `sleep N` (seconds, or with an `s`/`m`/`h` suffix) waits N seconds, scaled by
//!   [`crate::SimConfig::time_scale`], then succeeds; `sleep infinity` never ends;
//! - a `sh -c` script built only from these, joined by `;`, `&&`, `||` or newlines, runs
//!   them in order as a shell would.
//!
//! Any other command line (or none: the image's entrypoint) runs forever.

use std::time::Duration;

/// How a simulated container behaves once started.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Behaviour {
    /// A long-running process: it never exits.
    RunForever,
    /// A process that exits with `code` after `after` (unscaled).
    Exit { code: i32, after: Duration },
}

/// The behaviour of a container with this `command` and `args`.
pub fn behaviour(command: &[String], args: &[String]) -> Behaviour {
    let argv: Vec<&str> = command.iter().chain(args).map(String::as_str).collect();
    let Some((program, rest)) = argv.split_first() else {
        return Behaviour::RunForever;
    };
    let base = program.rsplit('/').next().unwrap_or(program);
    if matches!(base, "sh" | "bash" | "ash" | "dash")
        && let Some(pos) = rest.iter().position(|a| *a == "-c")
        && let Some(script) = rest.get(pos + 1)
    {
        return run_script(script).unwrap_or(Behaviour::RunForever);
    }
    let words: Vec<String> = argv.iter().map(|s| s.to_string()).collect();
    let mut elapsed = Duration::ZERO;
    match run_command(&words, &mut elapsed) {
        Some(Step::Status(code)) | Some(Step::Exit(code)) => Behaviour::Exit {
            code,
            after: elapsed,
        },
        Some(Step::Forever) | None => Behaviour::RunForever,
    }
}

enum Step {
    /// The command finished with this status; the script goes on.
    Status(i32),
    /// `exit N`: the script ends here.
    Exit(i32),
    /// `sleep infinity`.
    Forever,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Joiner {
    Seq,
    And,
    Or,
}

/// Run a `sh -c` script made of simple commands; None if it holds anything else.
fn run_script(script: &str) -> Option<Behaviour> {
    let statements = split_script(script)?;
    let mut elapsed = Duration::ZERO;
    let mut status = 0;
    let mut joiner = Joiner::Seq;
    for (words, next) in statements {
        let runs = match joiner {
            Joiner::Seq => true,
            Joiner::And => status == 0,
            Joiner::Or => status != 0,
        };
        joiner = next;
        if words.is_empty() {
            continue;
        }
        // Unknown commands make the whole script "not simple", even when skipped.
        let mut scratch = Duration::ZERO;
        let step = run_command(&words, if runs { &mut elapsed } else { &mut scratch })?;
        if !runs {
            continue;
        }
        match step {
            Step::Status(code) => status = code,
            Step::Exit(code) => {
                return Some(Behaviour::Exit {
                    code,
                    after: elapsed,
                });
            }
            Step::Forever => return Some(Behaviour::RunForever),
        }
    }
    Some(Behaviour::Exit {
        code: status,
        after: elapsed,
    })
}

fn run_command(words: &[String], elapsed: &mut Duration) -> Option<Step> {
    let (program, rest) = words.split_first()?;
    let base = program.rsplit('/').next().unwrap_or(program);
    match base {
        "true" | ":" => Some(Step::Status(0)),
        "false" => Some(Step::Status(1)),
        "echo" | "printf" => Some(Step::Status(0)),
        "exit" => match rest {
            [] => Some(Step::Exit(0)),
            [code] => code.parse::<i32>().ok().map(|c| Step::Exit(c & 0xff)),
            _ => None,
        },
        "sleep" => {
            if rest.is_empty() {
                return None;
            }
            let mut total = Duration::ZERO;
            for arg in rest {
                if arg == "infinity" || arg == "inf" {
                    return Some(Step::Forever);
                }
                total += parse_sleep(arg)?;
            }
            *elapsed += total;
            Some(Step::Status(0))
        }
        _ => None,
    }
}

/// `5`, `1.5`, `10s`, `2m`, `1h`.
fn parse_sleep(arg: &str) -> Option<Duration> {
    let (number, factor) = match arg.chars().last()? {
        's' => (&arg[..arg.len() - 1], 1.0),
        'm' => (&arg[..arg.len() - 1], 60.0),
        'h' => (&arg[..arg.len() - 1], 3600.0),
        'd' => (&arg[..arg.len() - 1], 86400.0),
        _ => (arg, 1.0),
    };
    let seconds: f64 = number.parse().ok()?;
    if !seconds.is_finite() || seconds < 0.0 {
        return None;
    }
    Some(Duration::from_secs_f64(seconds * factor))
}

/// Split a script into statements of words, each with how it joins the next one. None if the
/// script uses pipes, redirections, substitutions or grouping.
fn split_script(script: &str) -> Option<Vec<(Vec<String>, Joiner)>> {
    let mut statements = Vec::new();
    let mut words: Vec<String> = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = script.chars().peekable();
    let mut quote: Option<char> = None;
    while let Some(c) = chars.next() {
        if let Some(q) = quote {
            if c == q {
                quote = None;
            } else if q == '"' && (c == '$' || c == '`') {
                return None;
            } else {
                word.push(c);
            }
            continue;
        }
        let mut end_statement =
            |joiner: Joiner, words: &mut Vec<String>, word: &mut String, in_word: &mut bool| {
                if *in_word {
                    words.push(std::mem::take(word));
                    *in_word = false;
                }
                statements.push((std::mem::take(words), joiner));
            };
        match c {
            '\'' | '"' => {
                quote = Some(c);
                in_word = true;
            }
            ';' | '\n' => end_statement(Joiner::Seq, &mut words, &mut word, &mut in_word),
            '&' if chars.peek() == Some(&'&') => {
                chars.next();
                end_statement(Joiner::And, &mut words, &mut word, &mut in_word);
            }
            '|' if chars.peek() == Some(&'|') => {
                chars.next();
                end_statement(Joiner::Or, &mut words, &mut word, &mut in_word);
            }
            '&' | '|' | '>' | '<' | '`' | '$' | '(' | ')' | '{' | '}' | '\\' => return None,
            '#' if !in_word => {
                // A comment runs to the end of the line.
                for c in chars.by_ref() {
                    if c == '\n' {
                        break;
                    }
                }
                end_statement(Joiner::Seq, &mut words, &mut word, &mut in_word);
            }
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            c => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if quote.is_some() {
        return None;
    }
    if in_word {
        words.push(word);
    }
    statements.push((words, Joiner::Seq));
    Some(statements)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of(argv: &[&str]) -> Behaviour {
        let argv: Vec<String> = argv.iter().map(|s| s.to_string()).collect();
        behaviour(&argv, &[])
    }

    fn exit(code: i32, secs: f64) -> Behaviour {
        Behaviour::Exit {
            code,
            after: Duration::from_secs_f64(secs),
        }
    }

    #[test]
    fn simple_programs() {
        assert_eq!(of(&["true"]), exit(0, 0.0));
        assert_eq!(of(&["/bin/false"]), exit(1, 0.0));
        assert_eq!(of(&["sleep", "3"]), exit(0, 3.0));
        assert_eq!(of(&["sleep", "infinity"]), Behaviour::RunForever);
        assert_eq!(of(&["nginx", "-g", "daemon off;"]), Behaviour::RunForever);
        assert_eq!(of(&[]), Behaviour::RunForever);
    }

    #[test]
    fn shell_scripts() {
        assert_eq!(of(&["sh", "-c", "exit 0"]), exit(0, 0.0));
        assert_eq!(of(&["/bin/sh", "-c", "exit 1"]), exit(1, 0.0));
        assert_eq!(of(&["sh", "-c", "sleep 2; exit 3"]), exit(3, 2.0));
        assert_eq!(
            of(&["bash", "-c", "sleep 1 && echo 'done; ok' && exit 0"]),
            exit(0, 1.0)
        );
        assert_eq!(of(&["sh", "-c", "false && sleep 5"]), exit(1, 0.0));
        assert_eq!(of(&["sh", "-c", "false || exit 4"]), exit(4, 0.0));
        assert_eq!(of(&["sh", "-c", "sleep 1m\necho hi"]), exit(0, 60.0));
        assert_eq!(of(&["sh", "-c", "exit 300"]), exit(300 & 0xff, 0.0));
        assert_eq!(of(&["sh", "-c", "sleep 0.5"]), exit(0, 0.5));
    }

    #[test]
    fn anything_else_runs_forever() {
        assert_eq!(
            of(&["sh", "-c", "while true; do sleep 1; done"]),
            Behaviour::RunForever
        );
        assert_eq!(
            of(&["sh", "-c", "echo $HOME; exit 0"]),
            Behaviour::RunForever
        );
        assert_eq!(of(&["sh", "-c", "cat /x | grep y"]), Behaviour::RunForever);
        assert_eq!(of(&["sh", "-c", "sleep infinity"]), Behaviour::RunForever);
        assert_eq!(of(&["sh", "-c", "exit 1 2"]), Behaviour::RunForever);
        assert_eq!(of(&["sh", "-c", "false && nginx"]), Behaviour::RunForever);
    }

    #[test]
    fn args_alone_are_the_command_line() {
        let args: Vec<String> = ["sh", "-c", "exit 2"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(behaviour(&[], &args), exit(2, 0.0));
        let command = vec!["sh".to_string(), "-c".to_string()];
        assert_eq!(behaviour(&command, &["exit 5".to_string()]), exit(5, 0.0));
    }
}

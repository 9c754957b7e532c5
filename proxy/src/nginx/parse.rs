//! nginx's configuration syntax: a tree of directives.
//!
//! An nginx file is a list of **directives**. A simple directive is a name,
//! its arguments and a `;` (`listen 80;`); a block directive has a `{ ... }`
//! instead of the `;`, holding more directives (`server { ... }`). Arguments
//! are words separated by spaces; quotes (`"..."` or `'...'`) keep spaces and
//! `;{}` inside one argument; `#` starts a comment up to the end of the line.
//! nginx itself knows nothing more at this level: what a directive *means*
//! (and where it may appear) is each module's business, which is
//! [`super::translate`]'s business here.

use std::fmt;

/// One directive, with its line so that warnings can point at it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Directive {
    /// Its name: `proxy_pass`, `location`, ...
    pub name: String,
    /// Its arguments, unquoted.
    pub args: Vec<String>,
    /// The line its name is on (1-based).
    pub line: usize,
    /// The directives inside its `{ }`, for a block directive.
    pub block: Option<Vec<Directive>>,
}

impl Directive {
    /// The directive as nginx would print it, without its block: for
    /// comments in the TOML that name where a setting came from.
    pub fn source(&self) -> String {
        let mut out = self.name.clone();
        for arg in &self.args {
            out.push(' ');
            if arg.is_empty() || arg.contains([' ', '\t', ';', '{', '}', '#', '"', '\'']) {
                out.push('"');
                out.push_str(&arg.replace('\\', "\\\\").replace('"', "\\\""));
                out.push('"');
            } else {
                out.push_str(arg);
            }
        }
        out.push_str(if self.block.is_some() {
            " { ... }"
        } else {
            ";"
        });
        out
    }

    /// The argument at `index`, or `""` when there are fewer.
    pub fn arg(&self, index: usize) -> &str {
        self.args.get(index).map(String::as_str).unwrap_or("")
    }
}

/// A syntax error, at a line, with what to do about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// The line the problem is on (1-based).
    pub line: usize,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

impl std::error::Error for ParseError {}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Word(String),
    Semicolon,
    Open,
    Close,
}

/// Splits the text into words, `;`, `{` and `}`, each with its line.
fn tokenize(text: &str) -> Result<Vec<(Token, usize)>, ParseError> {
    let mut tokens = Vec::new();
    let mut chars = text.chars().peekable();
    let mut line = 1;
    while let Some(&c) = chars.peek() {
        match c {
            '\n' => {
                line += 1;
                chars.next();
            }
            c if c.is_whitespace() => {
                chars.next();
            }
            '#' => {
                while chars.peek().is_some_and(|&c| c != '\n') {
                    chars.next();
                }
            }
            ';' => {
                tokens.push((Token::Semicolon, line));
                chars.next();
            }
            '{' => {
                tokens.push((Token::Open, line));
                chars.next();
            }
            '}' => {
                tokens.push((Token::Close, line));
                chars.next();
            }
            '"' | '\'' => {
                let start = line;
                chars.next();
                let mut word = String::new();
                loop {
                    match chars.next() {
                        None => {
                            return Err(ParseError {
                                line: start,
                                message: format!(
                                    "this {c}-quoted argument is never closed: add the closing {c}"
                                ),
                            });
                        }
                        Some(q) if q == c => break,
                        Some('\\') => match chars.next() {
                            Some('n') => word.push('\n'),
                            Some('t') => word.push('\t'),
                            Some('r') => word.push('\r'),
                            Some(e) if e == c || e == '\\' => word.push(e),
                            Some(e) => {
                                if e == '\n' {
                                    line += 1;
                                }
                                word.push('\\');
                                word.push(e);
                            }
                            None => {}
                        },
                        Some(ch) => {
                            if ch == '\n' {
                                line += 1;
                            }
                            word.push(ch);
                        }
                    }
                }
                tokens.push((Token::Word(word), start));
            }
            _ => {
                let mut word = String::new();
                while let Some(&ch) = chars.peek() {
                    if ch.is_whitespace() || matches!(ch, ';' | '{' | '}') {
                        break;
                    }
                    chars.next();
                    word.push(ch);
                    // `${name}` is a variable, not a block.
                    if ch == '$' && chars.peek() == Some(&'{') {
                        for inner in chars.by_ref() {
                            word.push(inner);
                            if inner == '}' {
                                break;
                            }
                        }
                    } else if ch == '\\'
                        && let Some(next) = chars.next()
                    {
                        word.push(next);
                    }
                }
                tokens.push((Token::Word(word), line));
            }
        }
    }
    Ok(tokens)
}

/// Parses a whole file into its top-level directives.
pub fn parse(text: &str) -> Result<Vec<Directive>, ParseError> {
    let tokens = tokenize(text)?;
    let mut position = 0;
    let directives = parse_block(&tokens, &mut position, None)?;
    Ok(directives)
}

/// Reads directives until the `}` that closes the block opened on
/// `opened_at` (or until the end of the file at the top level).
fn parse_block(
    tokens: &[(Token, usize)],
    position: &mut usize,
    opened_at: Option<(usize, &str)>,
) -> Result<Vec<Directive>, ParseError> {
    let mut directives = Vec::new();
    loop {
        let Some((token, line)) = tokens.get(*position) else {
            return match opened_at {
                None => Ok(directives),
                Some((open_line, name)) => Err(ParseError {
                    line: open_line,
                    message: format!(
                        "the `{name}` block opened here is never closed: add a `}}` at its end"
                    ),
                }),
            };
        };
        *position += 1;
        let name = match token {
            Token::Word(word) => word.clone(),
            Token::Close => {
                return match opened_at {
                    Some(_) => Ok(directives),
                    None => Err(ParseError {
                        line: *line,
                        message: "unexpected `}`: no block is open here; remove it or add the `{` it closes".into(),
                    }),
                };
            }
            Token::Semicolon => {
                return Err(ParseError {
                    line: *line,
                    message: "unexpected `;`: a directive starts with its name".into(),
                });
            }
            Token::Open => {
                return Err(ParseError {
                    line: *line,
                    message:
                        "unexpected `{`: a block needs a directive name before it (e.g. `server {`)"
                            .into(),
                });
            }
        };
        let line = *line;
        let mut args = Vec::new();
        loop {
            match tokens.get(*position) {
                Some((Token::Word(word), _)) => {
                    args.push(word.clone());
                    *position += 1;
                }
                Some((Token::Semicolon, _)) => {
                    *position += 1;
                    directives.push(Directive {
                        name,
                        args,
                        line,
                        block: None,
                    });
                    break;
                }
                Some((Token::Open, _)) => {
                    *position += 1;
                    let block = parse_block(tokens, position, Some((line, &name)))?;
                    directives.push(Directive {
                        name,
                        args,
                        line,
                        block: Some(block),
                    });
                    break;
                }
                Some((Token::Close, _)) | None => {
                    return Err(ParseError {
                        line,
                        message: format!(
                            "directive `{name}` has no ending `;`: add `;` after its last argument"
                        ),
                    });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(text: &str) -> Vec<Directive> {
        parse(text).expect("valid nginx config")
    }

    #[test]
    fn directives_blocks_and_lines_are_read() {
        let tree = parsed("worker_processes 1;\nhttp {\n  server {\n    listen 80;\n  }\n}\n");
        assert_eq!(tree.len(), 2);
        assert_eq!(tree[0].name, "worker_processes");
        assert_eq!(tree[0].args, ["1"]);
        assert_eq!(tree[0].line, 1);
        let http = tree[1].block.as_ref().expect("http block");
        let server = http[0].block.as_ref().expect("server block");
        assert_eq!(server[0].name, "listen");
        assert_eq!(server[0].line, 4);
    }

    #[test]
    fn quotes_keep_spaces_and_semicolons_and_comments_are_skipped() {
        let tree = parsed(
            "return 200 'Welcome to the reverse proxy!'; # a comment { ; }\nadd_header X \"a;b\\\"c\";",
        );
        assert_eq!(tree[0].args, ["200", "Welcome to the reverse proxy!"]);
        assert_eq!(tree[1].args, ["X", "a;b\"c"]);
        assert_eq!(tree[1].line, 2);
    }

    #[test]
    fn a_variable_in_braces_is_part_of_the_word() {
        let tree = parsed("set $x ${host}abc;");
        assert_eq!(tree[0].args, ["$x", "${host}abc"]);
    }

    #[test]
    fn a_missing_semicolon_is_reported_at_its_directive() {
        let err = parse("server {\n  listen 80\n}\n").expect_err("missing ;");
        assert_eq!(err.line, 2);
        assert!(err.message.contains("`listen` has no ending `;`"), "{err}");
        let err = parse("worker_processes 1").expect_err("missing ; at end");
        assert_eq!(err.line, 1);
    }

    #[test]
    fn unbalanced_braces_are_reported() {
        let err = parse("http {\n  server {\n  }\n").expect_err("unclosed");
        assert_eq!(err.line, 1);
        assert!(
            err.message
                .contains("`http` block opened here is never closed")
        );
        let err = parse("http {\n}\n}\n").expect_err("extra }");
        assert_eq!(err.line, 3);
        assert!(err.message.contains("unexpected `}`"));
        let err = parse("{ listen 80; }").expect_err("block without name");
        assert!(err.message.contains("needs a directive name"));
    }

    #[test]
    fn an_unclosed_quote_is_reported_where_it_opens() {
        let err = parse("a;\nreturn 200 'oops;\n").expect_err("unclosed quote");
        assert_eq!(err.line, 2);
        assert!(err.message.contains("never closed"));
    }

    #[test]
    fn source_prints_the_directive_back() {
        let tree = parsed("return 200 'a b';\nlocation /x { }");
        assert_eq!(tree[0].source(), "return 200 \"a b\";");
        assert_eq!(tree[1].source(), "location /x { ... }");
    }
}

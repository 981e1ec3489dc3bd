//! The ATTACH object of `im.notify.*` (spec §2.6) as Rust types, and the text rules the server's
//! normaliser (`imnotify::domain::attach`) and these builders share, so a built attachment is one
//! the server keeps block for block.
//!
//! Builders only make valid blocks: a constructor that could make an invalid one returns
//! [`BuildError`]. Deserialising reads what a server stores and returns in `params.ATTACH`.
//!
//! ```
//! use imnotify_wire::attach::{Attach, Block, GridItem, Display, Url};
//!
//! let attach = Attach::new(vec![
//!     Block::message("Build #42 failed")?,
//!     Block::grid(vec![GridItem::new(Display::Line, "Branch", "main")?])?,
//!     Block::link(Url::new("https://ci.example.com/42")?.into())?,
//! ])?;
//! let json = serde_json::to_value(&attach)?;
//! assert_eq!(json["BLOCKS"][0]["MESSAGE"], "Build #42 failed");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::num::NonZeroU64;

use serde::{Deserialize, Serialize};

/// D1: the method page's "30 KB", in bytes of the normalised attachment's JSON.
///
/// ```
/// assert_eq!(imnotify_wire::attach::DEFAULT_MAX_BYTES, 30_720);
/// ```
pub const DEFAULT_MAX_BYTES: usize = 30 * 1024;

/// A DELIMITER block's `SIZE` when none is given.
///
/// ```
/// assert_eq!(imnotify_wire::attach::DEFAULT_DELIMITER_SIZE, 200);
/// ```
pub const DEFAULT_DELIMITER_SIZE: i64 = 200;

/// The messenger's colour palette (`Bitrix\Im\Color`, newest revision seen, including its
/// `COPILOT` entry). An attachment without a usable colour gets one of these at random.
///
/// ```
/// assert!(imnotify_wire::attach::PALETTE.iter().all(|c| imnotify_wire::attach::is_hex_color(c)));
/// ```
pub const PALETTE: &[&str] = &[
    "#df532d", // RED
    "#64a513", // GREEN
    "#4ba984", // MINT
    "#4ba5c3", // LIGHT_BLUE
    "#3e99ce", // DARK_BLUE
    "#8474c8", // PURPLE
    "#1eb4aa", // AQUA
    "#f76187", // PINK
    "#58cc47", // LIME
    "#ab7761", // BROWN
    "#29619b", // AZURE
    "#728f7a", // KHAKI
    "#ba9c7b", // SAND
    "#e8a441", // ORANGE
    "#556574", // MARENGO
    "#909090", // GRAY
    "#5e5f5e", // GRAPHITE
    "#8d51eb", // COPILOT
];

/// `#RGB` or `#RRGGBB`, either case: the colours ATTACH accepts.
///
/// ```
/// assert!(imnotify_wire::attach::is_hex_color("#A0f"));
/// assert!(!imnotify_wire::attach::is_hex_color("red"));
/// ```
pub fn is_hex_color(s: &str) -> bool {
    let Some(hex) = s.strip_prefix('#') else {
        return false;
    };
    matches!(hex.len(), 3 | 6) && hex.bytes().all(|b| b.is_ascii_hexdigit())
}

/// A link ATTACH keeps: portal-relative (`/...`) or absolute `http(s)://` (§2.6.5), so no
/// `javascript:` link survives.
///
/// ```
/// assert!(imnotify_wire::attach::is_link("/company/personal/user/1/"));
/// assert!(!imnotify_wire::attach::is_link("javascript:alert(1)"));
/// ```
pub fn is_link(s: &str) -> bool {
    s.starts_with('/') || s.starts_with("http://") || s.starts_with("https://")
}

/// PHP's `trim`: spaces, tabs, CR, LF, NUL and VT at both ends.
///
/// ```
/// assert_eq!(imnotify_wire::attach::php_trim("\t a \0"), "a");
/// ```
pub fn php_trim(s: &str) -> &str {
    s.trim_matches([' ', '\t', '\n', '\r', '\0', '\x0B'])
}

/// A single-line field: every line break (`\r\n`, `\n`, `\r`, VT, FF, NEL, U+2028, U+2029 — what
/// PCRE's `\R` matches) becomes a space, then the result is trimmed, so a name ending in a form
/// feed does not keep a trailing space and the result is a fixed point.
///
/// ```
/// assert_eq!(imnotify_wire::attach::one_line(" a\r\nb\u{2028}c "), "a b c");
/// ```
pub fn one_line(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\r' => {
                chars.next_if_eq(&'\n');
                out.push(' ');
            }
            '\n' | '\x0B' | '\x0C' | '\u{85}' | '\u{2028}' | '\u{2029}' => out.push(' '),
            c => out.push(c),
        }
    }
    php_trim(&out).to_owned()
}

/// A multi-line text field (MESSAGE, a grid VALUE): trimmed, `#BR#` written as `[BR]`.
///
/// ```
/// assert_eq!(imnotify_wire::attach::block_text(" a#BR#b "), "a[BR]b");
/// ```
pub fn block_text(s: &str) -> String {
    php_trim(s).replace("#BR#", "[BR]")
}

/// Why a builder refused to make a block.
///
/// ```
/// use imnotify_wire::attach::{Url, BuildError};
/// assert_eq!(Url::new("ftp://x").unwrap_err(), BuildError::Link("ftp://x".into()));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BuildError {
    /// A text the block needs is empty after trimming.
    EmptyText(&'static str),
    /// Not a portal-relative or `http(s)://` link.
    Link(String),
    /// Not `#RGB` or `#RRGGBB`.
    Color(String),
    /// A block or attachment needs at least one item.
    Empty(&'static str),
}

impl std::fmt::Display for BuildError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BuildError::EmptyText(what) => write!(f, "ATTACH: {what} is empty"),
            BuildError::Link(l) => write!(f, "ATTACH: {l:?} is not a / or http(s):// link"),
            BuildError::Color(c) => write!(f, "ATTACH: {c:?} is not a #RGB or #RRGGBB colour"),
            BuildError::Empty(what) => write!(f, "ATTACH: {what} has no item"),
        }
    }
}

impl std::error::Error for BuildError {}

/// A checked link (see [`is_link`]).
///
/// ```
/// let u = imnotify_wire::attach::Url::new("https://example.com/a")?;
/// assert_eq!(u.as_str(), "https://example.com/a");
/// # Ok::<(), imnotify_wire::attach::BuildError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Url(String);

impl Url {
    /// Checks `s`; [`BuildError::Link`] unless it passes [`is_link`].
    ///
    /// ```
    /// assert!(imnotify_wire::attach::Url::new("/relative").is_ok());
    /// ```
    pub fn new(s: impl Into<String>) -> Result<Url, BuildError> {
        let s = s.into();
        if is_link(&s) {
            Ok(Url(s))
        } else {
            Err(BuildError::Link(s))
        }
    }

    /// The link text.
    ///
    /// ```
    /// assert_eq!(imnotify_wire::attach::Url::new("/x").unwrap().as_str(), "/x");
    /// ```
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A checked colour (see [`is_hex_color`]).
///
/// ```
/// assert!(imnotify_wire::attach::HexColor::new("#123abc").is_ok());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct HexColor(String);

impl HexColor {
    /// Checks `s`; [`BuildError::Color`] unless it is `#RGB` or `#RRGGBB`.
    ///
    /// ```
    /// assert!(imnotify_wire::attach::HexColor::new("blue").is_err());
    /// ```
    pub fn new(s: impl Into<String>) -> Result<HexColor, BuildError> {
        let s = s.into();
        if is_hex_color(&s) {
            Ok(HexColor(s))
        } else {
            Err(BuildError::Color(s))
        }
    }
}

fn needed(text: String, what: &'static str) -> Result<String, BuildError> {
    if text.is_empty() {
        Err(BuildError::EmptyText(what))
    } else {
        Ok(text)
    }
}

/// The attachment: `{ID, BLOCKS, [DESCRIPTION], COLOR}`. `ID` and `COLOR` are set by the server
/// (the time of the call; a palette colour unless one is given).
///
/// ```
/// use imnotify_wire::attach::{Attach, Block, HexColor};
/// let a = Attach::new(vec![Block::delimiter()])?.color(HexColor::new("#ff0000")?).description("Sum");
/// assert_eq!(serde_json::to_string(&a)?,
///     r##"{"BLOCKS":[{"DELIMITER":{"SIZE":200}}],"DESCRIPTION":"Sum","COLOR":"#ff0000"}"##);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attach {
    /// Set by the server: the Unix time of the call.
    #[serde(rename = "ID", default, skip_serializing_if = "Option::is_none")]
    pub id: Option<i64>,
    /// At least one block.
    #[serde(rename = "BLOCKS")]
    pub blocks: Vec<Block>,
    /// The text shown where the attachment cannot be (push, e-mail subject lines).
    #[serde(
        rename = "DESCRIPTION",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub description: Option<String>,
    /// `#RRGGBB`, `#RGB` or `transparent`; the server picks from [`PALETTE`] when absent.
    #[serde(rename = "COLOR", default, skip_serializing_if = "Option::is_none")]
    pub color: Option<String>,
}

impl Attach {
    /// An attachment of `blocks`; [`BuildError::Empty`] when there is none.
    ///
    /// ```
    /// assert!(imnotify_wire::attach::Attach::new(vec![]).is_err());
    /// ```
    pub fn new(blocks: Vec<Block>) -> Result<Attach, BuildError> {
        if blocks.is_empty() {
            return Err(BuildError::Empty("the attachment"));
        }
        Ok(Attach {
            id: None,
            blocks,
            description: None,
            color: None,
        })
    }

    /// Sets the colour of the attachment's bar.
    ///
    /// ```
    /// # use imnotify_wire::attach::*;
    /// let a = Attach::new(vec![Block::delimiter()]).unwrap().color(HexColor::new("#fff").unwrap());
    /// assert_eq!(a.color.as_deref(), Some("#fff"));
    /// ```
    pub fn color(mut self, color: HexColor) -> Attach {
        self.color = Some(color.0);
        self
    }

    /// Sets the DESCRIPTION (trimmed; an empty one is left out, as the server does).
    ///
    /// ```
    /// # use imnotify_wire::attach::*;
    /// let a = Attach::new(vec![Block::delimiter()]).unwrap().description("  ");
    /// assert_eq!(a.description, None);
    /// ```
    pub fn description(mut self, text: &str) -> Attach {
        let text = php_trim(text);
        self.description = (!text.is_empty()).then(|| text.to_owned());
        self
    }
}

/// One block. Serialised the way the server stores it: `{"USER":[item]}`, `{"MESSAGE":"text"}`,
/// `{"GRID":[items]}`, `{"DELIMITER":{...}}`.
///
/// ```
/// use imnotify_wire::attach::Block;
/// let b = Block::message("Hi#BR#there")?;
/// assert_eq!(serde_json::to_string(&b)?, r#"{"MESSAGE":"Hi[BR]there"}"#);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Block {
    /// A user, chat or bot with an avatar; one item per block.
    #[serde(rename = "USER")]
    User(Vec<User>),
    /// A link with an optional preview; one item per block.
    #[serde(rename = "LINK")]
    Link(Vec<Link>),
    /// A link card; one item per block.
    #[serde(rename = "RICH_LINK")]
    RichLink(Vec<RichLink>),
    /// BB-code text.
    #[serde(rename = "MESSAGE")]
    Message(String),
    /// Name/value pairs.
    #[serde(rename = "GRID")]
    Grid(Vec<GridItem>),
    /// A gallery.
    #[serde(rename = "IMAGE")]
    Image(Vec<Image>),
    /// A list of files.
    #[serde(rename = "FILE")]
    File(Vec<File>),
    /// A horizontal line.
    #[serde(rename = "DELIMITER")]
    Delimiter(Delimiter),
}

impl Block {
    /// A MESSAGE block; the text is trimmed and must not be empty.
    ///
    /// ```
    /// assert!(imnotify_wire::attach::Block::message(" ").is_err());
    /// ```
    pub fn message(text: &str) -> Result<Block, BuildError> {
        Ok(Block::Message(needed(block_text(text), "MESSAGE")?))
    }

    /// A USER block.
    ///
    /// ```
    /// # use imnotify_wire::attach::*;
    /// let b = Block::user(User::new("Ann")?.user_id(std::num::NonZeroU64::new(5).unwrap()));
    /// assert_eq!(serde_json::to_string(&b)?, r#"{"USER":[{"NAME":"Ann","AVATAR_TYPE":"USER","USER_ID":5}]}"#);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn user(user: User) -> Block {
        Block::User(vec![user])
    }

    /// A LINK block. (Infallible today; a `Result` so a future check is not a breaking change.)
    ///
    /// ```
    /// # use imnotify_wire::attach::*;
    /// let b = Block::link(Link::new(Url::new("https://x.example")?).name("X"))?;
    /// assert_eq!(serde_json::to_string(&b)?, r#"{"LINK":[{"NAME":"X","LINK":"https://x.example"}]}"#);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn link(link: Link) -> Result<Block, BuildError> {
        Ok(Block::Link(vec![link]))
    }

    /// A RICH_LINK block.
    ///
    /// ```
    /// # use imnotify_wire::attach::*;
    /// let b = Block::rich_link(RichLink::new(Url::new("/docs")?).name("Docs"));
    /// assert!(matches!(b, Block::RichLink(_)));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn rich_link(link: RichLink) -> Block {
        Block::RichLink(vec![link])
    }

    /// A GRID block; [`BuildError::Empty`] without items.
    ///
    /// ```
    /// # use imnotify_wire::attach::*;
    /// assert!(Block::grid(vec![]).is_err());
    /// ```
    pub fn grid(items: Vec<GridItem>) -> Result<Block, BuildError> {
        if items.is_empty() {
            return Err(BuildError::Empty("GRID"));
        }
        Ok(Block::Grid(items))
    }

    /// An IMAGE block; [`BuildError::Empty`] without images.
    ///
    /// ```
    /// # use imnotify_wire::attach::*;
    /// let b = Block::images(vec![Image::new(Url::new("/a.png")?)])?;
    /// assert_eq!(serde_json::to_string(&b)?, r#"{"IMAGE":[{"LINK":"/a.png"}]}"#);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn images(images: Vec<Image>) -> Result<Block, BuildError> {
        if images.is_empty() {
            return Err(BuildError::Empty("IMAGE"));
        }
        Ok(Block::Image(images))
    }

    /// A FILE block; [`BuildError::Empty`] without files.
    ///
    /// ```
    /// # use imnotify_wire::attach::*;
    /// let b = Block::files(vec![File::new(Url::new("/a.pdf")?).name("a.pdf").size(1024)])?;
    /// assert_eq!(serde_json::to_string(&b)?, r#"{"FILE":[{"LINK":"/a.pdf","NAME":"a.pdf","SIZE":1024}]}"#);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn files(files: Vec<File>) -> Result<Block, BuildError> {
        if files.is_empty() {
            return Err(BuildError::Empty("FILE"));
        }
        Ok(Block::File(files))
    }

    /// A DELIMITER of the default size.
    ///
    /// ```
    /// assert!(matches!(imnotify_wire::attach::Block::delimiter(), imnotify_wire::attach::Block::Delimiter(_)));
    /// ```
    pub fn delimiter() -> Block {
        Block::Delimiter(Delimiter::default())
    }
}

/// A USER item: a name and, optionally, one target (a user, chat or bot id, or a link) and an
/// avatar. `AVATAR_TYPE` follows the target.
///
/// ```
/// let u = imnotify_wire::attach::User::new(" Ann\nLee ")?;
/// assert_eq!(u.name, "Ann Lee");
/// # Ok::<(), imnotify_wire::attach::BuildError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub struct User {
    /// One line, not empty.
    pub name: String,
    /// `USER`, `CHAT` or `BOT`.
    pub avatar_type: String,
    /// A network user's id (`X12`): read from servers, not built.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_id: Option<String>,
    /// The user the item shows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<u64>,
    /// The chat the item shows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chat_id: Option<u64>,
    /// The bot the item shows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bot_id: Option<u64>,
    /// Where the name links to, when no id is given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<Url>,
    /// The avatar image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub avatar: Option<Url>,
}

impl User {
    /// A user item named `name` (made one line; [`BuildError::EmptyText`] if empty).
    ///
    /// ```
    /// assert!(imnotify_wire::attach::User::new("\n").is_err());
    /// ```
    pub fn new(name: &str) -> Result<User, BuildError> {
        Ok(User {
            name: needed(one_line(name), "USER NAME")?,
            avatar_type: "USER".to_owned(),
            network_id: None,
            user_id: None,
            chat_id: None,
            bot_id: None,
            link: None,
            avatar: None,
        })
    }

    fn target(mut self, user: Option<u64>, chat: Option<u64>, bot: Option<u64>) -> User {
        (self.user_id, self.chat_id, self.bot_id, self.link) = (user, chat, bot, None);
        self.avatar_type = match (chat, bot) {
            (Some(_), _) => "CHAT",
            (_, Some(_)) => "BOT",
            _ => "USER",
        }
        .to_owned();
        self
    }

    /// Targets a user (replacing any other target).
    ///
    /// ```
    /// # use imnotify_wire::attach::*;
    /// let u = User::new("Ann")?.user_id(std::num::NonZeroU64::new(3).unwrap());
    /// assert_eq!(u.user_id, Some(3));
    /// # Ok::<(), BuildError>(())
    /// ```
    pub fn user_id(self, id: NonZeroU64) -> User {
        self.target(Some(id.get()), None, None)
    }

    /// Targets a chat (`AVATAR_TYPE` `CHAT`).
    ///
    /// ```
    /// # use imnotify_wire::attach::*;
    /// let u = User::new("Ops")?.chat_id(std::num::NonZeroU64::new(9).unwrap());
    /// assert_eq!(u.avatar_type, "CHAT");
    /// # Ok::<(), BuildError>(())
    /// ```
    pub fn chat_id(self, id: NonZeroU64) -> User {
        self.target(None, Some(id.get()), None)
    }

    /// Targets a bot (`AVATAR_TYPE` `BOT`).
    ///
    /// ```
    /// # use imnotify_wire::attach::*;
    /// let u = User::new("CI")?.bot_id(std::num::NonZeroU64::new(2).unwrap());
    /// assert_eq!(u.avatar_type, "BOT");
    /// # Ok::<(), BuildError>(())
    /// ```
    pub fn bot_id(self, id: NonZeroU64) -> User {
        self.target(None, None, Some(id.get()))
    }

    /// Links the name to `url` (replacing any id target).
    ///
    /// ```
    /// # use imnotify_wire::attach::*;
    /// let u = User::new("Ann")?.link(Url::new("https://a.example")?);
    /// assert!(u.link.is_some());
    /// # Ok::<(), BuildError>(())
    /// ```
    pub fn link(self, url: Url) -> User {
        let mut u = self.target(None, None, None);
        u.link = Some(url);
        u
    }

    /// Sets the avatar image.
    ///
    /// ```
    /// # use imnotify_wire::attach::*;
    /// let u = User::new("Ann")?.avatar(Url::new("/ann.png")?);
    /// assert!(u.avatar.is_some());
    /// # Ok::<(), BuildError>(())
    /// ```
    pub fn avatar(mut self, url: Url) -> User {
        self.avatar = Some(url);
        self
    }
}

/// A LINK item: a URL with an optional name, description and preview image.
///
/// ```
/// # use imnotify_wire::attach::*;
/// let l = Link::new(Url::new("https://a.example")?).desc("About A").preview(Url::new("/p.png")?, 100, 50);
/// assert_eq!(l.width, Some(100));
/// # Ok::<(), BuildError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub struct Link {
    /// An entity target, read from servers only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_id: Option<String>,
    /// An entity target, read from servers only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<u64>,
    /// An entity target, read from servers only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chat_id: Option<u64>,
    /// One line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The target URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<Url>,
    /// BB-code description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desc: Option<String>,
    /// HTML preview, read from servers only (it replaces the image preview).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub html: Option<String>,
    /// A preview image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preview: Option<Url>,
    /// The preview's width in pixels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub width: Option<u64>,
    /// The preview's height in pixels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub height: Option<u64>,
}

impl Link {
    /// A link to `url`.
    ///
    /// ```
    /// # use imnotify_wire::attach::*;
    /// assert_eq!(Link::new(Url::new("/a")?).link.unwrap().as_str(), "/a");
    /// # Ok::<(), BuildError>(())
    /// ```
    pub fn new(url: Url) -> Link {
        Link {
            network_id: None,
            user_id: None,
            chat_id: None,
            name: None,
            link: Some(url),
            desc: None,
            html: None,
            preview: None,
            width: None,
            height: None,
        }
    }

    /// The text shown for the link, made one line (left out when empty).
    ///
    /// ```
    /// # use imnotify_wire::attach::*;
    /// assert_eq!(Link::new(Url::new("/a")?).name("A\nB").name.as_deref(), Some("A B"));
    /// # Ok::<(), BuildError>(())
    /// ```
    pub fn name(mut self, name: &str) -> Link {
        let name = one_line(name);
        self.name = (!name.is_empty()).then_some(name);
        self
    }

    /// A description under the link.
    ///
    /// ```
    /// # use imnotify_wire::attach::*;
    /// assert!(Link::new(Url::new("/a")?).desc("d").desc.is_some());
    /// # Ok::<(), BuildError>(())
    /// ```
    pub fn desc(mut self, text: &str) -> Link {
        self.desc = Some(text.to_owned());
        self
    }

    /// A preview image with its size in pixels (a zero dimension is left out).
    ///
    /// ```
    /// # use imnotify_wire::attach::*;
    /// assert_eq!(Link::new(Url::new("/a")?).preview(Url::new("/p")?, 0, 5).width, None);
    /// # Ok::<(), BuildError>(())
    /// ```
    pub fn preview(mut self, image: Url, width: u64, height: u64) -> Link {
        self.preview = Some(image);
        self.width = (width > 0).then_some(width);
        self.height = (height > 0).then_some(height);
        self
    }
}

impl From<Url> for Link {
    fn from(url: Url) -> Link {
        Link::new(url)
    }
}

/// The `PREVIEW_SIZE` of a RICH_LINK.
///
/// ```
/// let s = imnotify_wire::attach::PreviewSize { height: 1, width: 2 };
/// assert_eq!(s.width, 2);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub struct PreviewSize {
    /// Pixels (0: unknown).
    pub height: i64,
    /// Pixels (0: unknown).
    pub width: i64,
}

/// A RICH_LINK item: a card with a one-line name and description and a preview or an extra
/// image.
///
/// ```
/// # use imnotify_wire::attach::*;
/// let r = RichLink::new(Url::new("/a")?).desc("x\ny").extra_image(Url::new("/e.png")?);
/// assert_eq!(r.desc.as_deref(), Some("x y"));
/// # Ok::<(), BuildError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub struct RichLink {
    /// An entity target, read from servers only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_id: Option<String>,
    /// An entity target, read from servers only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<u64>,
    /// An entity target, read from servers only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chat_id: Option<u64>,
    /// One line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The target URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<Url>,
    /// One line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desc: Option<String>,
    /// One line; read from servers only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub html: Option<String>,
    /// The preview image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preview: Option<Url>,
    /// Its size; present exactly when `preview` is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preview_size: Option<PreviewSize>,
    /// An image shown when there is no preview.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extra_image: Option<Url>,
}

impl RichLink {
    /// A card linking to `url`.
    ///
    /// ```
    /// # use imnotify_wire::attach::*;
    /// assert!(RichLink::new(Url::new("/a")?).name.is_none());
    /// # Ok::<(), BuildError>(())
    /// ```
    pub fn new(url: Url) -> RichLink {
        RichLink {
            network_id: None,
            user_id: None,
            chat_id: None,
            name: None,
            link: Some(url),
            desc: None,
            html: None,
            preview: None,
            preview_size: None,
            extra_image: None,
        }
    }

    /// The card's title, one line (left out when empty).
    ///
    /// ```
    /// # use imnotify_wire::attach::*;
    /// assert_eq!(RichLink::new(Url::new("/a")?).name("T").name.as_deref(), Some("T"));
    /// # Ok::<(), BuildError>(())
    /// ```
    pub fn name(mut self, name: &str) -> RichLink {
        let name = one_line(name);
        self.name = (!name.is_empty()).then_some(name);
        self
    }

    /// The card's text, one line.
    ///
    /// ```
    /// # use imnotify_wire::attach::*;
    /// assert!(RichLink::new(Url::new("/a")?).desc("d").desc.is_some());
    /// # Ok::<(), BuildError>(())
    /// ```
    pub fn desc(mut self, text: &str) -> RichLink {
        self.desc = Some(one_line(text));
        self
    }

    /// A preview image of `width` x `height` pixels (replaces an extra image).
    ///
    /// ```
    /// # use imnotify_wire::attach::*;
    /// let r = RichLink::new(Url::new("/a")?).preview(Url::new("/p")?, 10, 20);
    /// assert_eq!(r.preview_size, Some(PreviewSize { height: 20, width: 10 }));
    /// # Ok::<(), BuildError>(())
    /// ```
    pub fn preview(mut self, image: Url, width: u32, height: u32) -> RichLink {
        self.preview = Some(image);
        self.preview_size = Some(PreviewSize {
            height: height.into(),
            width: width.into(),
        });
        self.extra_image = None;
        self
    }

    /// An image shown instead of a preview (removes the preview).
    ///
    /// ```
    /// # use imnotify_wire::attach::*;
    /// assert!(RichLink::new(Url::new("/a")?).extra_image(Url::new("/e")?).preview.is_none());
    /// # Ok::<(), BuildError>(())
    /// ```
    pub fn extra_image(mut self, image: Url) -> RichLink {
        self.extra_image = Some(image);
        self.preview = None;
        self.preview_size = None;
        self
    }
}

/// How a GRID item is laid out.
///
/// ```
/// assert_eq!(serde_json::to_string(&imnotify_wire::attach::Display::Row).unwrap(), r#""ROW""#);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Display {
    /// Name above value, full width.
    Block,
    /// Name and value side by side, in a line of items.
    Line,
    /// Name and value in a row of a table.
    Row,
    /// A table.
    Table,
}

/// A GRID item.
///
/// ```
/// # use imnotify_wire::attach::*;
/// let g = GridItem::new(Display::Block, "Status", "Failed")?.color(HexColor::new("#f00")?);
/// assert_eq!(g.color.as_deref(), Some("#f00"));
/// # Ok::<(), BuildError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub struct GridItem {
    /// The layout.
    pub display: Display,
    /// One line.
    pub name: String,
    /// BB-code text.
    pub value: String,
    /// The value's colour.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub color: Option<String>,
    /// Width of the name column in pixels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub width: Option<u64>,
    /// Height in pixels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub height: Option<u64>,
    /// Shows the value as this user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<u64>,
    /// Shows the value as this chat.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chat_id: Option<u64>,
    /// Links the value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<Url>,
}

impl GridItem {
    /// An item; the name is made one line, the value trimmed. Both empty is
    /// [`BuildError::EmptyText`], except for [`Display::Line`].
    ///
    /// ```
    /// # use imnotify_wire::attach::*;
    /// assert!(GridItem::new(Display::Block, "", " ").is_err());
    /// assert!(GridItem::new(Display::Line, "", "").is_ok());
    /// ```
    pub fn new(display: Display, name: &str, value: &str) -> Result<GridItem, BuildError> {
        let (name, value) = (one_line(name), block_text(value));
        if display != Display::Line && name.is_empty() && value.is_empty() {
            return Err(BuildError::EmptyText("GRID NAME and VALUE"));
        }
        Ok(GridItem {
            display,
            name,
            value,
            color: None,
            width: None,
            height: None,
            user_id: None,
            chat_id: None,
            link: None,
        })
    }

    /// The value's colour.
    ///
    /// ```
    /// # use imnotify_wire::attach::*;
    /// assert!(GridItem::new(Display::Row, "a", "b")?.color(HexColor::new("#000")?).color.is_some());
    /// # Ok::<(), BuildError>(())
    /// ```
    pub fn color(mut self, color: HexColor) -> GridItem {
        self.color = Some(color.0);
        self
    }

    /// Width of the name column in pixels.
    ///
    /// ```
    /// # use imnotify_wire::attach::*;
    /// let g = GridItem::new(Display::Row, "a", "b")?.width(std::num::NonZeroU64::new(100).unwrap());
    /// assert_eq!(g.width, Some(100));
    /// # Ok::<(), BuildError>(())
    /// ```
    pub fn width(mut self, px: NonZeroU64) -> GridItem {
        self.width = Some(px.get());
        self
    }

    /// Links the value.
    ///
    /// ```
    /// # use imnotify_wire::attach::*;
    /// assert!(GridItem::new(Display::Row, "a", "b")?.link(Url::new("/x")?).link.is_some());
    /// # Ok::<(), BuildError>(())
    /// ```
    pub fn link(mut self, url: Url) -> GridItem {
        self.link = Some(url);
        self
    }
}

/// An IMAGE item.
///
/// ```
/// # use imnotify_wire::attach::*;
/// let i = Image::new(Url::new("/a.png")?).name("A").preview(Url::new("/a_s.png")?);
/// assert_eq!(i.name.as_deref(), Some("A"));
/// # Ok::<(), BuildError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub struct Image {
    /// A caption (may span lines).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The image.
    pub link: Url,
    /// Pixels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub width: Option<u64>,
    /// Pixels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub height: Option<u64>,
    /// A smaller version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preview: Option<Url>,
}

impl Image {
    /// The image at `url`.
    ///
    /// ```
    /// # use imnotify_wire::attach::*;
    /// assert_eq!(Image::new(Url::new("/i")?).link.as_str(), "/i");
    /// # Ok::<(), BuildError>(())
    /// ```
    pub fn new(url: Url) -> Image {
        Image {
            name: None,
            link: url,
            width: None,
            height: None,
            preview: None,
        }
    }

    /// A caption, trimmed (left out when empty).
    ///
    /// ```
    /// # use imnotify_wire::attach::*;
    /// assert_eq!(Image::new(Url::new("/i")?).name(" ").name, None);
    /// # Ok::<(), BuildError>(())
    /// ```
    pub fn name(mut self, caption: &str) -> Image {
        let caption = php_trim(caption);
        self.name = (!caption.is_empty()).then(|| caption.to_owned());
        self
    }

    /// The size in pixels (a zero dimension is left out).
    ///
    /// ```
    /// # use imnotify_wire::attach::*;
    /// assert_eq!(Image::new(Url::new("/i")?).size(3, 4).height, Some(4));
    /// # Ok::<(), BuildError>(())
    /// ```
    pub fn size(mut self, width: u64, height: u64) -> Image {
        self.width = (width > 0).then_some(width);
        self.height = (height > 0).then_some(height);
        self
    }

    /// A smaller version to show first.
    ///
    /// ```
    /// # use imnotify_wire::attach::*;
    /// assert!(Image::new(Url::new("/i")?).preview(Url::new("/p")?).preview.is_some());
    /// # Ok::<(), BuildError>(())
    /// ```
    pub fn preview(mut self, url: Url) -> Image {
        self.preview = Some(url);
        self
    }
}

/// A FILE item.
///
/// ```
/// # use imnotify_wire::attach::*;
/// assert_eq!(File::new(Url::new("/f")?).size(0).size, None);
/// # Ok::<(), BuildError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub struct File {
    /// The download link.
    pub link: Url,
    /// One line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
}

impl File {
    /// The file at `url`.
    ///
    /// ```
    /// # use imnotify_wire::attach::*;
    /// assert_eq!(File::new(Url::new("/f")?).link.as_str(), "/f");
    /// # Ok::<(), BuildError>(())
    /// ```
    pub fn new(url: Url) -> File {
        File {
            link: url,
            name: None,
            size: None,
        }
    }

    /// The file name, one line (left out when empty).
    ///
    /// ```
    /// # use imnotify_wire::attach::*;
    /// assert_eq!(File::new(Url::new("/f")?).name("a.txt").name.as_deref(), Some("a.txt"));
    /// # Ok::<(), BuildError>(())
    /// ```
    pub fn name(mut self, name: &str) -> File {
        let name = one_line(name);
        self.name = (!name.is_empty()).then_some(name);
        self
    }

    /// The size in bytes (0 is left out).
    ///
    /// ```
    /// # use imnotify_wire::attach::*;
    /// assert_eq!(File::new(Url::new("/f")?).size(7).size, Some(7));
    /// # Ok::<(), BuildError>(())
    /// ```
    pub fn size(mut self, bytes: u64) -> File {
        self.size = (bytes > 0).then_some(bytes);
        self
    }
}

/// A DELIMITER: a line of `SIZE` pixels in an optional colour.
///
/// ```
/// # use imnotify_wire::attach::*;
/// let d = Delimiter::default().size(std::num::NonZeroU64::new(30).unwrap()).color(HexColor::new("#ccc")?);
/// assert_eq!(serde_json::to_string(&Block::Delimiter(d)).unwrap(), r##"{"DELIMITER":{"SIZE":30,"COLOR":"#ccc"}}"##);
/// # Ok::<(), BuildError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub struct Delimiter {
    /// Pixels.
    #[serde(default = "default_delimiter_size")]
    pub size: i64,
    /// The line's colour.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub color: Option<String>,
}

fn default_delimiter_size() -> i64 {
    DEFAULT_DELIMITER_SIZE
}

impl Default for Delimiter {
    fn default() -> Delimiter {
        Delimiter {
            size: DEFAULT_DELIMITER_SIZE,
            color: None,
        }
    }
}

impl Delimiter {
    /// The length in pixels.
    ///
    /// ```
    /// # use imnotify_wire::attach::*;
    /// assert_eq!(Delimiter::default().size(std::num::NonZeroU64::new(5).unwrap()).size, 5);
    /// ```
    pub fn size(mut self, px: NonZeroU64) -> Delimiter {
        self.size = i64::try_from(px.get()).unwrap_or(i64::MAX);
        self
    }

    /// The line's colour.
    ///
    /// ```
    /// # use imnotify_wire::attach::*;
    /// assert!(Delimiter::default().color(HexColor::new("#000").unwrap()).color.is_some());
    /// ```
    pub fn color(mut self, color: HexColor) -> Delimiter {
        self.color = Some(color.0);
        self
    }
}

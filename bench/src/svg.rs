//! The plots' SVG: a document on a white background and the few shapes
//! the benchmark plots draw (text, axes, lines through points).

use std::fmt::Write as _;

/// An SVG document being drawn.
pub struct Svg(String);

impl Svg {
    /// A `w` × `h` document on white.
    pub fn new(w: f64, h: f64) -> Svg {
        Svg(format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"11\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
        ))
    }

    /// `s` at (`x`, `y`), in black.
    pub fn text(&mut self, x: f64, y: f64, s: &str) {
        self.text_in(x, y, s, "black");
    }

    /// `s` at (`x`, `y`), in `colour`.
    pub fn text_in(&mut self, x: f64, y: f64, s: &str, colour: &str) {
        let _ = writeln!(
            self.0,
            "<text x=\"{x:.1}\" y=\"{y:.1}\" fill=\"{colour}\">{s}</text>"
        );
    }

    /// An x axis at height `bottom` from `left` to `right`, and a y axis at
    /// `left` from `top` down to `bottom`.
    pub fn axes(&mut self, left: f64, bottom: f64, right: f64, top: f64) {
        let _ = writeln!(
            self.0,
            "<line x1=\"{left}\" y1=\"{bottom}\" x2=\"{right}\" y2=\"{bottom}\" stroke=\"black\"/><line x1=\"{left}\" y1=\"{top}\" x2=\"{left}\" y2=\"{bottom}\" stroke=\"black\"/>"
        );
    }

    /// A line through `points`, in `colour`, `width` wide.
    pub fn polyline(
        &mut self,
        points: impl IntoIterator<Item = (f64, f64)>,
        colour: &str,
        width: f64,
    ) {
        let points: Vec<String> = points
            .into_iter()
            .map(|(x, y)| format!("{x:.1},{y:.1}"))
            .collect();
        let _ = writeln!(
            self.0,
            "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"{width}\" points=\"{}\"/>",
            points.join(" ")
        );
    }

    /// Any other element, as given.
    pub fn element(&mut self, element: &str) {
        self.0.push_str(element);
        self.0.push('\n');
    }

    /// The finished document.
    pub fn finish(mut self) -> String {
        self.0.push_str("</svg>\n");
        self.0
    }
}

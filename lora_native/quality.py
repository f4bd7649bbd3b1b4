"""Quality checks: the C core measures, this module decides (thresholds documented here).

Every metric is computed on a grayscale downscale whose long side is 256 px (box filter,
aspect kept), so the scores mean the same for a 600 px and a 6000 px picture.

Calibration (scikit-image's sample photographs, 300-1400 px): sharp photos score a blur of
150-7000; the same blurred by a Gaussian of sigma 1.5 px score 14-740, of sigma 3 px 3-160.
The default 60 rejects clearly soft pictures; raise it for strict sets. Night photos have
a mean luma near 20, hence the dark limits; line art on white has an entropy near 1.3 bits.
"""
from dataclasses import dataclass, field

# name -> one line for reports and --help
CHECKS = {
    "too_small": "short side under --min-side pixels (upscaling it would blur the LoRA)",
    "odd_aspect": "long side more than --max-aspect times the short side (center crops lose most of it)",
    "blurry": "little fine detail: variance of the Laplacian under the blur threshold (judged only when "
              "exposure and content are fine)",
    "too_dark": "almost no bright pixels: 99th-percentile luma or mean luma under the dark thresholds",
    "too_bright": "almost no dark pixels (washed out or blank): 1st-percentile luma or mean above the bright thresholds",
    "low_information": "luma histogram entropy under the threshold (a blank or near-flat picture)",
    "grayscale": "no colour (reported; rejected only with --reject-grayscale)",
}


@dataclass(frozen=True)
class QualityThresholds:
    min_side: int = 512          # too_small: min(width, height) < min_side
    max_aspect: float = 3.0      # odd_aspect: max/min side > max_aspect
    blur: float = 60.0           # blurry: Laplacian variance < blur
    dark_p99: int = 40           # too_dark: p99 luma < dark_p99 ...
    dark_mean: float = 12.0      #           ... or mean luma < dark_mean (night photos sit near 20)
    bright_p1: int = 235         # too_bright: p1 luma > bright_p1 ...
    bright_mean: float = 245.0   #             ... or mean luma > bright_mean
    min_entropy: float = 1.0     # low_information: entropy (bits) < min_entropy (line art sits near 1.3)
    gray_color_fraction: float = 0.005  # grayscale: fewer than 0.5% of pixels with chroma > 12
    reject_grayscale: bool = False
    ignore: frozenset = field(default_factory=frozenset)  # check names never applied


def evaluate(metrics, t):
    """metrics: a dict from the analysis (width, height, blur, mean_luma, p1_luma, p99_luma,
    entropy, color_fraction). Returns (rejections, notes): lists of (code, message)."""
    rejections, notes = [], []

    def flag(code, message, reject=True):
        if code in t.ignore:
            return
        (rejections if reject else notes).append((code, message))

    w, h = metrics["width"], metrics["height"]
    short, long_ = min(w, h), max(w, h)
    if short < t.min_side:
        flag("too_small", "short side %d px is under the minimum %d px" % (short, t.min_side))
    if short > 0 and long_ / short > t.max_aspect:
        flag("odd_aspect", "aspect ratio %.2f:1 exceeds %.1f:1" % (long_ / short, t.max_aspect))
    exposure_before = len(rejections)
    if metrics["p99_luma"] < t.dark_p99 or metrics["mean_luma"] < t.dark_mean:
        flag("too_dark", "too dark: mean luma %.0f, 99th percentile %d"
             % (metrics["mean_luma"], metrics["p99_luma"]))
    if metrics["p1_luma"] > t.bright_p1 or metrics["mean_luma"] > t.bright_mean:
        flag("too_bright", "too bright or blank: mean luma %.0f, 1st percentile %d"
             % (metrics["mean_luma"], metrics["p1_luma"]))
    if metrics["entropy"] < t.min_entropy:
        flag("low_information", "entropy %.2f bits is under %.2f (little content)"
             % (metrics["entropy"], t.min_entropy))
    # The Laplacian shrinks with contrast: a dark, washed-out or flat picture always looks
    # "blurry", so sharpness is judged only when exposure and content are fine.
    exposure_problem = any(code in ("too_dark", "too_bright", "low_information")
                           for code, _ in rejections[exposure_before:])
    if metrics["blur"] < t.blur and not exposure_problem:
        flag("blurry", "sharpness %.1f is under the blur threshold %.1f" % (metrics["blur"], t.blur))
    if metrics["color_fraction"] < t.gray_color_fraction:
        flag("grayscale", "no colour (grayscale picture)", reject=t.reject_grayscale)
    return rejections, notes

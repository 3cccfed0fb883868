"""Constants of the data part: snippet timing and THUMOS14 annotation statistics.

Timing
------
I3D features are computed on consecutive 16-frame windows of 25 fps video, so snippet ``i``
covers ``[i * 0.64, (i + 1) * 0.64)`` seconds.

THUMOS14 statistics
-------------------
Source: the THUMOS14 temporal annotations shared beside the project
(``../shared/data/thumos14``): ``gt.json`` of the CASE/BaSNet code line (410 videos: 200
``train`` = the THUMOS14 validation set, 210 ``test``) for instances and labels, and W-TALC's
``wtalc-annotations/duration.npy`` for video lengths (``gt.json`` has none).

Derivation: :func:`case.data.statistics.annotation_statistics` over all 410 videos, floats
rounded to 4 significant digits. Reproduce with::

    python examples/wtal_case/tools/thumos14_stats.py

``tests/wtal_case/test_data_constants.py`` recomputes them from the real files and checks
they equal the values below. The synthetic generator (:mod:`case.data.synthetic`) is built
from these numbers; nothing here is tuned.
"""

from __future__ import annotations

#: Frames in one feature snippet (I3D window).
FRAMES_PER_SNIPPET: int = 16
#: Frame rate at which features are extracted.
FEATURE_FPS: float = 25.0
#: Seconds covered by one snippet: 16 / 25 = 0.64.
SNIPPET_SECONDS: float = FRAMES_PER_SNIPPET / FEATURE_FPS
#: Feature width of one stream (RGB or optical flow) of I3D.
STREAM_DIM: int = 1024
#: The largest feature magnitude a data set may hold. I3D features lie within a few tens (the
#: synthetic set within 10); a value beyond this is a corrupt or foreign file, which would
#: otherwise train on, logging losses of 1e29. Features scaled otherwise need rescaling first.
MAX_FEATURE_MAGNITUDE: float = 1e4

#: The 20 THUMOS14 classes; label index = position (alphabetical: W-TALC's classlist
#: and the official CASE code use this order).
THUMOS14_CLASSES: tuple[str, ...] = (
    "BaseballPitch",
    "BasketballDunk",
    "Billiards",
    "CleanAndJerk",
    "CliffDiving",
    "CricketBowling",
    "CricketShot",
    "Diving",
    "FrisbeeCatch",
    "GolfSwing",
    "HammerThrow",
    "HighJump",
    "JavelinThrow",
    "LongJump",
    "PoleVault",
    "Shotput",
    "SoccerPenalty",
    "TennisSwing",
    "ThrowDiscus",
    "VolleyballSpiking",
)

#: Videos per split of gt.json (train = the THUMOS14 validation set; test leaves out
#: video_test_0000270 and video_test_0001496).
THUMOS14_NUM_VIDEOS = {"test": 210, "train": 200}

#: Action instances per video: heavy-tailed (median 8, mean 15, max 218).
THUMOS14_INSTANCES_PER_VIDEO = {
    "mean": 15.41,
    "median": 8.0,
    "p10": 2.0,
    "p90": 36.2,
    "min": 1.0,
    "max": 218.0,
}

#: Instance length in seconds.
THUMOS14_INSTANCE_SECONDS = {
    "mean": 4.269,
    "median": 3.0,
    "p10": 1.0,
    "p90": 8.5,
    "min": 0.2,
    "max": 118.1,
}

#: Video length in seconds (W-TALC duration.npy); log_mean / log_std of ln(seconds).
THUMOS14_VIDEO_SECONDS = {
    "mean": 213.2,
    "median": 154.6,
    "p10": 42.44,
    "p90": 432.4,
    "min": 8.932,
    "max": 1673.0,
    "log_mean": 4.979,
    "log_std": 0.8803,
}

#: 16-frame snippets per video, T = floor(duration * 25 / 16).
THUMOS14_SNIPPETS_PER_VIDEO = {
    "mean": 332.7,
    "median": 241.0,
    "p10": 65.9,
    "p90": 674.7,
    "min": 13.0,
    "max": 2614.0,
}

#: Share of snippets whose centre lies in an instance: pooled over all snippets,
#: and the mean and median of the per-video share.
THUMOS14_FOREGROUND_FRACTION = {
    "snippets": 0.2958,
    "video_mean": 0.2951,
    "video_median": 0.2449,
}

#: {distinct classes in a video: videos}.
THUMOS14_CLASSES_PER_VIDEO = {1: 349, 2: 60, 3: 1}

#: {class: videos containing it}.
THUMOS14_CLASS_VIDEOS = {
    "BaseballPitch": 22,
    "BasketballDunk": 20,
    "Billiards": 20,
    "CleanAndJerk": 23,
    "CliffDiving": 26,
    "CricketBowling": 33,
    "CricketShot": 34,
    "Diving": 46,
    "FrisbeeCatch": 17,
    "GolfSwing": 19,
    "HammerThrow": 19,
    "HighJump": 21,
    "JavelinThrow": 21,
    "LongJump": 21,
    "PoleVault": 20,
    "Shotput": 26,
    "SoccerPenalty": 21,
    "TennisSwing": 19,
    "ThrowDiscus": 21,
    "VolleyballSpiking": 23,
}

#: {(a, b): videos containing both}: co-occurrence (the Cricket and Diving pairs dominate).
THUMOS14_CLASS_PAIR_VIDEOS = {
    ("BaseballPitch", "FrisbeeCatch"): 1,
    ("CleanAndJerk", "HammerThrow"): 1,
    ("CleanAndJerk", "ThrowDiscus"): 1,
    ("CliffDiving", "Diving"): 26,
    ("CricketBowling", "CricketShot"): 27,
    ("GolfSwing", "TennisSwing"): 1,
    ("HighJump", "JavelinThrow"): 1,
    ("HighJump", "Shotput"): 1,
    ("JavelinThrow", "Shotput"): 1,
    ("LongJump", "PoleVault"): 1,
    ("Shotput", "ThrowDiscus"): 2,
}

#: {sorted tuple of a video's classes: videos}; the generator draws class sets from it.
THUMOS14_CLASS_SET_VIDEOS = {
    ("BaseballPitch",): 21,
    ("BaseballPitch", "FrisbeeCatch"): 1,
    ("BasketballDunk",): 20,
    ("Billiards",): 20,
    ("CleanAndJerk",): 21,
    ("CleanAndJerk", "HammerThrow"): 1,
    ("CleanAndJerk", "ThrowDiscus"): 1,
    ("CliffDiving", "Diving"): 26,
    ("CricketBowling",): 6,
    ("CricketBowling", "CricketShot"): 27,
    ("CricketShot",): 7,
    ("Diving",): 20,
    ("FrisbeeCatch",): 16,
    ("GolfSwing",): 18,
    ("GolfSwing", "TennisSwing"): 1,
    ("HammerThrow",): 18,
    ("HighJump",): 20,
    ("HighJump", "JavelinThrow", "Shotput"): 1,
    ("JavelinThrow",): 20,
    ("LongJump",): 20,
    ("LongJump", "PoleVault"): 1,
    ("PoleVault",): 19,
    ("Shotput",): 23,
    ("Shotput", "ThrowDiscus"): 2,
    ("SoccerPenalty",): 21,
    ("TennisSwing",): 18,
    ("ThrowDiscus",): 18,
    ("VolleyballSpiking",): 23,
}

#: {class: median instance length in seconds}.
THUMOS14_CLASS_INSTANCE_SECONDS_MEDIAN = {
    "BaseballPitch": 3.0,
    "BasketballDunk": 1.5,
    "Billiards": 2.2,
    "CleanAndJerk": 8.75,
    "CliffDiving": 2.7,
    "CricketBowling": 1.2,
    "CricketShot": 1.1,
    "Diving": 2.5,
    "FrisbeeCatch": 2.3,
    "GolfSwing": 4.2,
    "HammerThrow": 7.1,
    "HighJump": 4.5,
    "JavelinThrow": 6.3,
    "LongJump": 7.1,
    "PoleVault": 6.4,
    "Shotput": 4.65,
    "SoccerPenalty": 2.9,
    "TennisSwing": 1.5,
    "ThrowDiscus": 4.25,
    "VolleyballSpiking": 1.7,
}

#: {class: mean over the videos containing the class of the mean ln(seconds) of its
#: instances there}; videos weigh equally however many instances they have.
THUMOS14_CLASS_LOG_SECONDS = {
    "BaseballPitch": 1.169,
    "BasketballDunk": 0.5652,
    "Billiards": 0.8403,
    "CleanAndJerk": 2.465,
    "CliffDiving": 1.15,
    "CricketBowling": 0.4923,
    "CricketShot": 0.3179,
    "Diving": 1.105,
    "FrisbeeCatch": 1.296,
    "GolfSwing": 1.807,
    "HammerThrow": 1.916,
    "HighJump": 1.572,
    "JavelinThrow": 1.746,
    "LongJump": 1.867,
    "PoleVault": 1.933,
    "Shotput": 1.552,
    "SoccerPenalty": 1.0,
    "TennisSwing": 0.6139,
    "ThrowDiscus": 1.922,
    "VolleyballSpiking": 0.9107,
}

#: Std of ln(seconds) minus its class's CLASS_LOG_SECONDS: between videos (std of the
#: per-video mean) and within a video (pooled).
THUMOS14_INSTANCE_LOG_SECONDS_STD = {"between_video": 0.5235, "within_video": 0.4521}

#: Least squares ln(n) = a + slope_log_duration * (ln D - mean_log_duration)
#: + slope_log_length * (m - mean_log_length) + noise (std residual_std): n instances,
#: D seconds, m the mean ln(instance seconds) of a video, a the mean of its classes'
#: CLASS_LOG_INSTANCES_INTERCEPT.
THUMOS14_LOG_INSTANCES_MODEL = {
    "slope_log_duration": 0.8634,
    "slope_log_length": -0.5766,
    "residual_std": 0.6828,
    "mean_log_duration": 4.979,
    "mean_log_length": 1.329,
}

#: {class: intercept of ln(instances per video)} of LOG_INSTANCES_MODEL's fit.
THUMOS14_CLASS_LOG_INSTANCES_INTERCEPT = {
    "BaseballPitch": 1.28,
    "BasketballDunk": 2.404,
    "Billiards": 1.385,
    "CleanAndJerk": 2.221,
    "CliffDiving": 3.34,
    "CricketBowling": 2.071,
    "CricketShot": 2.175,
    "Diving": 2.314,
    "FrisbeeCatch": 2.266,
    "GolfSwing": 1.525,
    "HammerThrow": 2.334,
    "HighJump": 2.229,
    "JavelinThrow": 2.024,
    "LongJump": 2.091,
    "PoleVault": 2.328,
    "Shotput": 2.13,
    "SoccerPenalty": 1.638,
    "TennisSwing": 2.079,
    "ThrowDiscus": 2.233,
    "VolleyballSpiking": 2.196,
}

"""Procedural human figures for the synthetic people data set (numpy + OpenCV only).

A figure is a kinematic skeleton with adult proportions (segment lengths as fractions of the
standing height, after the anthropometric tables of Drillis and Contini) posed by joint angles
that stay inside human limits, seen from any yaw (side views come out as foreshortening of the 3D
skeleton), then drawn as shaded capsules (limbs), a convex torso and a head with hair, eyes, ears
and a nose. The person's left limbs are drawn in warm colours (red to amber), the right limbs in
cool colours (cyan to blue) with darker bands across them, so left and right differ in appearance
in every image; ears take the colour of their side.

Coordinates. The 3D body frame uses units of the standing height: x = the person's left (for a
person facing the camera), y = down, z = away from the camera, origin at the pelvis (mid-hips).
A figure is rotated by a proper rotation (global yaw, camera pitch, in-plane roll; never a
mirror, so left stays left), projected orthographically, scaled to `height_px` and shifted.
Image coordinates are continuous pixels with pixel centres at integers (the project's
convention); OpenCV draws with 4 fractional bits so keypoints and drawn joints line up to 1/16 px.

Drawing writes three rasters at once: the RGB image, an integer part-id map (which part of which
person, or an occluder, is on top at each pixel: it decides keypoint visibility) and the person's
own silhouette mask (its box and area).
"""

from __future__ import annotations

import colorsys
import dataclasses
import math

import cv2
import numpy as np

LEFT = np.array([1.0, 0.0, 0.0])
DOWN = np.array([0.0, 1.0, 0.0])
UP = -DOWN
FORWARD = np.array([0.0, 0.0, -1.0])

# Every keypoint a figure provides, by name: COCO's 17 plus MPII's extra four. The COCO and MPII
# keypoint sets pick theirs by name, so no index is written here.
FIGURE_KEYPOINTS = (
    "nose", "l_eye", "r_eye", "l_ear", "r_ear", "l_shoulder", "r_shoulder", "l_elbow",
    "r_elbow", "l_wrist", "r_wrist", "l_hip", "r_hip", "l_knee", "r_knee", "l_ankle", "r_ankle",
    "pelvis", "thorax", "upper_neck", "head_top",
)  # fmt: skip

# Drawn parts of one figure; a pixel of the part-id map holds `id_base + PART_NAMES.index(part)`.
PART_NAMES = (
    "torso", "neck", "head", "l_ear", "r_ear",
    "l_upper_arm", "l_forearm", "l_hand", "r_upper_arm", "r_forearm", "r_hand",
    "l_thigh", "l_shank", "l_foot", "r_thigh", "r_shank", "r_foot",
)  # fmt: skip
PART_ID = {name: i for i, name in enumerate(PART_NAMES)}

# A keypoint is visible (COCO v=2) when the part on top at its pixel is one of its owners.
KEYPOINT_OWNERS = {
    "nose": ("head",), "l_eye": ("head",), "r_eye": ("head",),
    "l_ear": ("l_ear",), "r_ear": ("r_ear",),
    "l_shoulder": ("l_upper_arm",), "r_shoulder": ("r_upper_arm",),
    "l_elbow": ("l_upper_arm", "l_forearm"), "r_elbow": ("r_upper_arm", "r_forearm"),
    "l_wrist": ("l_forearm", "l_hand"), "r_wrist": ("r_forearm", "r_hand"),
    "l_hip": ("l_thigh",), "r_hip": ("r_thigh",),
    "l_knee": ("l_thigh", "l_shank"), "r_knee": ("r_thigh", "r_shank"),
    "l_ankle": ("l_shank", "l_foot"), "r_ankle": ("r_shank", "r_foot"),
    "pelvis": ("torso",), "thorax": ("torso",), "upper_neck": ("neck", "head"),
    "head_top": ("head",),
}  # fmt: skip

# Hue families (degrees) that tell the sides apart; tests and the docs refer to them.
LEFT_HUES_DEG = (-10.0, 35.0)  # red, orange, amber
RIGHT_HUES_DEG = (190.0, 245.0)  # cyan to blue

# Face features (unit directions in the head frame: left, up, forward). A feature is labelled when
# its surface normal faces the camera by more than LABEL_FACING and painted (so potentially v=2)
# above DRAW_FACING; between the two it is labelled but hidden by the head itself (v=1).
_FACE_FEATURES = {
    "l_eye": (0.38, 0.12, 0.92),
    "r_eye": (-0.38, 0.12, 0.92),
    "nose": (0.0, -0.18, 1.0),
    "l_ear": (1.0, 0.0, -0.12),
    "r_ear": (-1.0, 0.0, -0.12),
}
_LABEL_FACING = {"l_eye": -0.25, "r_eye": -0.25, "nose": -0.45, "l_ear": -0.6, "r_ear": -0.6}
_DRAW_FACING = {"l_eye": 0.15, "r_eye": 0.15, "nose": -0.15, "l_ear": -0.25, "r_ear": -0.25}


@dataclasses.dataclass(frozen=True)
class Proportions:
    """Body measurements as fractions of the standing height (pelvis at 0.53 of it)."""

    shoulder_rise: float = 0.29  # pelvis to shoulder line, along the spine
    neck_length: float = 0.05  # shoulder line to upper neck (chin level)
    shoulder_half_width: float = 0.13
    hip_half_width: float = 0.09
    upper_arm: float = 0.186
    forearm: float = 0.146
    hand: float = 0.075
    thigh: float = 0.245
    shank: float = 0.246
    foot: float = 0.13
    head_half_width: float = 0.056
    head_half_height: float = 0.07
    head_half_depth: float = 0.064
    # Thickness (capsule radii and torso half widths), scaled by the figure's build.
    upper_arm_radius: float = 0.037
    forearm_radius: float = 0.031
    hand_radius: float = 0.026
    thigh_radius: float = 0.06
    shank_radius: float = 0.046
    foot_radius: float = 0.024
    neck_radius: float = 0.03
    chest_half_width: float = 0.13
    chest_half_depth: float = 0.068
    waist_half_width: float = 0.105
    waist_half_depth: float = 0.072


def sample_proportions(rng: np.random.Generator) -> Proportions:
    """Jitter lengths by a few percent and thickness by the figure's build (0.95 to 1.45)."""
    base = Proportions()
    build = rng.uniform(0.95, 1.45)
    arm = rng.uniform(0.93, 1.07)
    leg = rng.uniform(0.94, 1.06)
    head = rng.uniform(0.9, 1.1)
    shoulders = rng.uniform(0.9, 1.1)
    return dataclasses.replace(
        base,
        shoulder_half_width=base.shoulder_half_width * shoulders,
        upper_arm=base.upper_arm * arm,
        forearm=base.forearm * arm,
        thigh=base.thigh * leg,
        shank=base.shank * leg,
        head_half_width=base.head_half_width * head,
        head_half_height=base.head_half_height * head,
        head_half_depth=base.head_half_depth * head,
        upper_arm_radius=base.upper_arm_radius * build,
        forearm_radius=base.forearm_radius * build,
        hand_radius=base.hand_radius * math.sqrt(build),
        thigh_radius=base.thigh_radius * build,
        shank_radius=base.shank_radius * build,
        foot_radius=base.foot_radius * math.sqrt(build),
        neck_radius=base.neck_radius * build,
        chest_half_width=base.chest_half_width * shoulders * math.sqrt(build),
        chest_half_depth=base.chest_half_depth * build,
        waist_half_width=base.waist_half_width * build,
        waist_half_depth=base.waist_half_depth * build,
    )


# Joint-angle limits in degrees (flexion forward positive, abduction outward positive).
JOINT_LIMITS = {
    "shoulder_flex": (-60.0, 180.0),
    "shoulder_abd": (-15.0, 180.0),
    "humeral_twist": (-40.0, 80.0),
    "elbow": (0.0, 150.0),
    "hip_flex": (-30.0, 130.0),
    "hip_abd": (-15.0, 50.0),
    "knee": (0.0, 150.0),
    "ankle": (-20.0, 45.0),
    "lean_forward": (-20.0, 80.0),
    "lean_side": (-25.0, 25.0),
    "twist": (-35.0, 35.0),
    "head_yaw": (-60.0, 60.0),
    "head_pitch": (-35.0, 35.0),
    "head_roll": (-25.0, 25.0),
}

POSE_FAMILIES = (
    "standing", "walking", "running", "arms_raised", "waving", "sitting", "squatting",
    "star", "bending", "kicking", "boxing",
)  # fmt: skip
# Mostly standing and walking people, as in COCO.
_FAMILY_WEIGHTS = np.array([4.5, 5, 2, 1.5, 1.5, 2, 1, 0.7, 1, 0.7, 1.5])
_FAMILY_WEIGHTS = _FAMILY_WEIGHTS / _FAMILY_WEIGHTS.sum()


def _side_angles(shoulder_flex, shoulder_abd, elbow, hip_flex, hip_abd, knee):
    return {
        "shoulder_flex": shoulder_flex, "shoulder_abd": shoulder_abd, "elbow": elbow,
        "hip_flex": hip_flex, "hip_abd": hip_abd, "knee": knee,
    }  # fmt: skip


def sample_pose(rng: np.random.Generator) -> dict:
    """Joint angles (degrees) of one pose drawn from a family, with noise, inside JOINT_LIMITS.

    Returns:
        dict with torso/head angles ("lean_forward", "twist", "head_yaw", ...), per-side angles
        under "left"/"right" ("shoulder_flex", "elbow", "hip_flex", "knee", ...), the global view
        angles "yaw", "pitch", "roll" and the family's name under "family".
    """
    family = POSE_FAMILIES[rng.choice(len(POSE_FAMILIES), p=_FAMILY_WEIGHTS)]
    u = rng.uniform
    lean, sides = 0.0, None
    if family == "standing":
        sides = [_side_angles(u(-15, 20), u(3, 25), u(0, 45), u(-5, 10), u(0, 12), u(0, 15))
                 for _ in range(2)]  # fmt: skip
    elif family in ("walking", "running"):
        phase = u(0, 2 * math.pi)
        run = family == "running"
        leg_amp, arm_amp = (u(35, 55), u(40, 70)) if run else (u(15, 32), u(15, 40))
        lean = u(8, 22) if run else u(-3, 6)
        sides = []
        for sign in (1.0, -1.0):
            swing = sign * math.sin(phase)
            knee = (u(60, 110) if run else u(20, 50)) * max(0.0, math.cos(phase) * sign) + u(5, 15)
            elbow = u(75, 105) if run else u(5, 35)
            sides.append(_side_angles(-arm_amp * swing, u(5, 15), elbow, leg_amp * swing,
                                      u(0, 8), knee))  # fmt: skip
    elif family == "arms_raised":
        sides = [_side_angles(u(120, 180), u(0, 60), u(0, 40), u(-5, 10), u(0, 15), u(0, 20))
                 for _ in range(2)]  # fmt: skip
    elif family == "waving":
        sides = [_side_angles(u(-10, 20), u(5, 20), u(0, 40), u(-5, 10), u(0, 12), u(0, 15))
                 for _ in range(2)]  # fmt: skip
        sides[rng.integers(2)].update(shoulder_flex=u(20, 60), shoulder_abd=u(70, 110),
                                      elbow=u(60, 120))  # fmt: skip
    elif family == "sitting":
        lean = u(-10, 15)
        sides = [_side_angles(u(0, 45), u(0, 15), u(40, 100), u(75, 100), u(0, 20), u(70, 110))
                 for _ in range(2)]  # fmt: skip
    elif family == "squatting":
        lean = u(25, 50)
        sides = [_side_angles(u(20, 90), u(0, 25), u(10, 90), u(95, 125), u(10, 30), u(110, 145))
                 for _ in range(2)]  # fmt: skip
    elif family == "star":
        sides = [_side_angles(u(-10, 20), u(90, 160), u(0, 25), u(0, 10), u(20, 45), u(0, 15))
                 for _ in range(2)]  # fmt: skip
    elif family == "bending":
        lean = u(35, 75)
        sides = [_side_angles(u(40, 110), u(0, 20), u(0, 60), u(-5, 10), u(0, 15), u(0, 20))
                 for _ in range(2)]  # fmt: skip
    elif family == "kicking":
        sides = [_side_angles(u(-30, 60), u(20, 80), u(0, 60), u(-10, 5), u(0, 15), u(0, 15))
                 for _ in range(2)]  # fmt: skip
        sides[rng.integers(2)].update(hip_flex=u(50, 95), knee=u(0, 70))
    else:  # boxing
        lean = u(0, 15)
        sides = [_side_angles(u(40, 85), u(10, 40), u(90, 140), u(-10, 20), u(5, 20), u(10, 35))
                 for _ in range(2)]  # fmt: skip
        sides[rng.integers(2)].update(elbow=u(0, 40), shoulder_flex=u(70, 95))

    pose = {
        "family": family,
        "lean_forward": lean + rng.normal(0, 4),
        "lean_side": rng.normal(0, 6),
        "twist": rng.normal(0, 10),
        "head_yaw": rng.normal(0, 20),
        "head_pitch": rng.normal(0, 10),
        "head_roll": rng.normal(0, 7),
    }
    for name, angles in zip(("left", "right"), sides):
        angles = {key: value + rng.normal(0, 6) for key, value in angles.items()}
        angles["humeral_twist"] = rng.normal(15, 20)
        angles["ankle"] = rng.normal(5, 10)
        pose[name] = {key: float(np.clip(v, *JOINT_LIMITS[key])) for key, v in angles.items()}
    for key in ("lean_forward", "lean_side", "twist", "head_yaw", "head_pitch", "head_roll"):
        pose[key] = float(np.clip(pose[key], *JOINT_LIMITS[key]))
    pose.update(_sample_view(rng))
    return pose



def _sample_view(rng: np.random.Generator) -> dict:
    """Global yaw (mostly frontal, some side-ish, a few from behind), pitch and in-plane roll."""
    kind = rng.uniform()
    if kind < 0.55:
        yaw = rng.uniform(-35, 35)
    elif kind < 0.9:
        yaw = rng.choice([-1.0, 1.0]) * rng.uniform(35, 100)
    else:
        yaw = rng.choice([-1.0, 1.0]) * rng.uniform(100, 180)
    if rng.uniform() > 0.04:
        roll = rng.normal(0, 6)
    else:  # lying or falling
        roll = rng.choice([-1.0, 1.0]) * rng.uniform(60, 100)
    return {"yaw": float(yaw), "pitch": float(rng.normal(0, 8)), "roll": float(roll)}


def _unit(vector: np.ndarray) -> np.ndarray:
    return vector / np.linalg.norm(vector)


def _rotate_towards(vector: np.ndarray, target: np.ndarray, degrees: float) -> np.ndarray:
    """Rotate unit `vector` by `degrees` in the plane it spans with `target`, towards `target`."""
    toward = target - np.dot(target, vector) * vector
    norm = np.linalg.norm(toward)
    if norm < 1e-6:  # target parallel to the vector: rotating "towards" it is a no-op
        return vector
    angle = math.radians(degrees)
    return math.cos(angle) * vector + math.sin(angle) * (toward / norm)


def _axis_rotation(axis: np.ndarray, degrees: float) -> np.ndarray:
    """3x3 rotation by `degrees` about unit `axis` (Rodrigues)."""
    x, y, z = axis
    angle = math.radians(degrees)
    c, s, t = math.cos(angle), math.sin(angle), 1.0 - math.cos(angle)
    return np.array([
        [t * x * x + c, t * x * y - s * z, t * x * z + s * y],
        [t * x * y + s * z, t * y * y + c, t * y * z - s * x],
        [t * x * z - s * y, t * y * z + s * x, t * z * z + c],
    ])  # fmt: skip


def _rotation_towards(vector: np.ndarray, target: np.ndarray, degrees: float) -> np.ndarray:
    """3x3 rigid rotation turning `vector` by `degrees` towards `target` (as _rotate_towards),
    to be applied to other vectors too (identity when the two are parallel)."""
    axis = np.cross(vector, target)
    norm = np.linalg.norm(axis)
    if norm < 1e-9:
        return np.eye(3)
    return _axis_rotation(axis / norm, degrees)


def view_rotation(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """Proper 3x3 rotation: yaw about the vertical axis, then pitch, then in-plane roll."""
    cy, sy = math.cos(math.radians(yaw)), math.sin(math.radians(yaw))
    cp, sp = math.cos(math.radians(pitch)), math.sin(math.radians(pitch))
    cr, sr = math.cos(math.radians(roll)), math.sin(math.radians(roll))
    r_yaw = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    r_pitch = np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])
    r_roll = np.array([[cr, -sr, 0], [sr, cr, 0], [0, 0, 1]])
    return r_roll @ r_pitch @ r_yaw


@dataclasses.dataclass
class Skeleton3D:
    """Posed 3D joints (body frame, units of standing height) and the frames used to draw.

    `points` maps names to float [3]: the FIGURE_KEYPOINTS plus drawing helpers ("neck_base",
    "head_centre", "l_hand_end", "l_heel", "l_toe", ... and the torso corners "torso_0" ...).
    `head_axes` holds the head frame (left, up, forward unit vectors).
    """

    points: dict
    head_axes: tuple


def build_skeleton(pose: dict, body: Proportions) -> Skeleton3D:
    """Forward kinematics of `pose` (see sample_pose) for a body with proportions `body`."""
    p = {"pelvis": np.zeros(3)}
    # Torso frame: lean forward, lean sideways, twist of the shoulders against the hips.
    up_t = _rotate_towards(UP, FORWARD, pose["lean_forward"])
    up_t = _unit(_rotate_towards(up_t, LEFT, pose["lean_side"]))
    fwd_t = _axis_rotation(up_t, pose["twist"]) @ FORWARD
    fwd_t = _unit(fwd_t - np.dot(fwd_t, up_t) * up_t)
    left_t = np.cross(up_t, fwd_t)

    p["neck_base"] = up_t * body.shoulder_rise
    p["thorax"] = p["neck_base"] - up_t * 0.015
    p["upper_neck"] = p["neck_base"] + up_t * body.neck_length
    # Head frame relative to the torso.
    rotation = _axis_rotation(up_t, pose["head_yaw"])
    up_h, fwd_h = up_t, rotation @ fwd_t
    left_h = np.cross(up_h, fwd_h)
    pitch = _axis_rotation(left_h, -pose["head_pitch"])
    up_h, fwd_h = pitch @ up_h, pitch @ fwd_h
    roll = _axis_rotation(fwd_h, pose["head_roll"])
    up_h = roll @ up_h
    left_h = np.cross(up_h, fwd_h)
    p["head_centre"] = p["upper_neck"] + up_h * (body.head_half_height * 0.9) + fwd_h * 0.012
    p["head_top"] = p["head_centre"] + up_h * body.head_half_height
    radii = np.array([body.head_half_width, body.head_half_height, body.head_half_depth])
    for name, (l, u, f) in _FACE_FEATURES.items():
        local = np.array([l, u, f]) / np.linalg.norm([l, u, f])
        surface = local * radii * (1.1 if name == "nose" else 0.97)
        p[name] = p["head_centre"] + surface[0] * left_h + surface[1] * up_h + surface[2] * fwd_h

    # Torso corners: a box from the chest to below the hips.
    hip_level = DOWN * 0.03
    for i, (w, d) in enumerate(((1, 1), (1, -1), (-1, 1), (-1, -1))):
        p[f"torso_{i}"] = (p["neck_base"] - up_t * 0.02 + left_t * w * body.chest_half_width
                           + fwd_t * d * body.chest_half_depth)  # fmt: skip
        p[f"torso_{i + 4}"] = (hip_level + LEFT * w * body.waist_half_width
                               + FORWARD * d * body.waist_half_depth)  # fmt: skip

    for side, sign in (("l", 1.0), ("r", -1.0)):
        angles = pose["left" if side == "l" else "right"]
        # Arm, in the torso frame: flexion (forward), then abduction (outward), as one rigid
        # rotation that also carries the arm's front, towards which the elbow bends.
        raise_amount = (max(angles["shoulder_abd"], angles["shoulder_flex"]) - 90.0) / 60.0
        shoulder = (p["neck_base"] + left_t * sign * body.shoulder_half_width
                    + up_t * 0.02 * min(1.0, max(0.0, raise_amount)))  # fmt: skip
        outward = left_t * sign
        flexion = _rotation_towards(-up_t, fwd_t, angles["shoulder_flex"])
        arm = _rotation_towards(flexion @ -up_t, outward, angles["shoulder_abd"]) @ flexion
        upper, front = _unit(arm @ -up_t), _unit(arm @ fwd_t)
        # Internal (positive) rotation of the upper arm turns its front inwards.
        medial = -outward - np.dot(-outward, upper) * upper
        bend = _unit(_rotate_towards(front, medial, angles["humeral_twist"]))
        fore = _unit(_rotate_towards(upper, bend, angles["elbow"]))
        p[f"{side}_shoulder"] = shoulder
        p[f"{side}_elbow"] = shoulder + upper * body.upper_arm
        p[f"{side}_wrist"] = p[f"{side}_elbow"] + fore * body.forearm
        p[f"{side}_hand_end"] = p[f"{side}_wrist"] + _rotate_towards(fore, bend, 15) * body.hand
        # Leg, in the pelvis frame, the same way; the knee bends towards the back of the thigh.
        hip = LEFT * sign * body.hip_half_width
        flexion = _rotation_towards(DOWN, FORWARD, angles["hip_flex"])
        leg = _rotation_towards(flexion @ DOWN, LEFT * sign, angles["hip_abd"]) @ flexion
        thigh = _unit(leg @ DOWN)
        knee = _rotation_towards(thigh, leg @ -FORWARD, angles["knee"])
        shank = _unit(knee @ thigh)
        foot = _unit(_rotate_towards(_unit(knee @ leg @ FORWARD), shank, angles["ankle"]))
        p[f"{side}_hip"] = hip
        p[f"{side}_knee"] = hip + thigh * body.thigh
        p[f"{side}_ankle"] = p[f"{side}_knee"] + shank * body.shank
        p[f"{side}_heel"] = p[f"{side}_ankle"] + shank * 0.03 - foot * 0.02
        p[f"{side}_toe"] = p[f"{side}_heel"] + foot * body.foot
    return Skeleton3D(points=p, head_axes=(left_h, up_h, fwd_h))


def _hsv(hue_deg: float, saturation: float, value: float) -> tuple:
    r, g, b = colorsys.hsv_to_rgb((hue_deg % 360.0) / 360.0, saturation, value)
    return (r * 255.0, g * 255.0, b * 255.0)


@dataclasses.dataclass(frozen=True)
class Appearance:
    """Colours (RGB floats 0-255) of one figure. Left limbs warm, right limbs cool and banded."""

    skin: tuple
    hair: tuple
    shirt: tuple
    l_arm: tuple
    l_leg: tuple
    r_arm: tuple
    r_leg: tuple
    eye: tuple


def sample_appearance(rng: np.random.Generator) -> Appearance:
    """Random clothes, skin and hair; limb hues from LEFT_HUES_DEG / RIGHT_HUES_DEG."""
    u = rng.uniform
    left_hue, right_hue = u(*LEFT_HUES_DEG), u(*RIGHT_HUES_DEG)
    if u() < 0.6:  # muted shirt of any hue
        shirt = _hsv(u(0, 360), u(0.0, 0.3), u(0.3, 0.95))
    else:  # green or purple shirt: hues that neither side uses
        shirt = _hsv(rng.choice([u(85, 160), u(265, 320)]), u(0.3, 0.7), u(0.35, 0.9))
    return Appearance(
        skin=_hsv(u(18, 34), u(0.25, 0.6), u(0.35, 0.97)),
        hair=_hsv(u(15, 45), u(0.2, 0.7), u(0.08, 0.7)),
        shirt=shirt,
        l_arm=_hsv(left_hue, u(0.65, 1.0), u(0.7, 1.0)),
        l_leg=_hsv(left_hue + u(-8, 8), u(0.65, 1.0), u(0.55, 0.9)),
        r_arm=_hsv(right_hue, u(0.65, 1.0), u(0.7, 1.0)),
        r_leg=_hsv(right_hue + u(-8, 8), u(0.65, 1.0), u(0.55, 0.9)),
        eye=_hsv(u(0, 360), u(0.0, 0.5), u(0.05, 0.3)),
    )


_SHIFT = 4  # OpenCV fixed-point fraction bits for sub-pixel drawing
_ONE = 1 << _SHIFT


def _fixed(point) -> tuple:
    return (int(round(point[0] * _ONE)), int(round(point[1] * _ONE)))


def _scaled(rgb, factor: float, lift: float = 0.0) -> tuple:
    return tuple(min(255.0, c * factor + lift) for c in rgb)


def draw_capsule(image, p0, p1, radius, rgb, light, banded=False, id_map=None, part_id=0,
                 silhouette=None):  # fmt: skip
    """A shaded capsule (a thick segment with round caps) from `p0` to `p1` (pixels, float).

    Shading is three nested strokes, lighter towards the 2D `light` direction; `banded` adds
    darker bands across the capsule. The same capsule, unshaded, is written into `id_map` (value
    `part_id`) and `silhouette` (value 1) when given.
    """
    p0, p1 = np.asarray(p0, float), np.asarray(p1, float)
    thickness = max(1, int(round(2.0 * radius)))
    a, b = _fixed(p0), _fixed(p1)
    if id_map is not None:
        cv2.line(id_map, a, b, part_id, thickness, cv2.LINE_8, _SHIFT)
    if silhouette is not None:
        cv2.line(silhouette, a, b, 1, thickness, cv2.LINE_8, _SHIFT)
    if radius < 1.5:
        cv2.line(image, a, b, rgb, thickness, cv2.LINE_AA, _SHIFT)
        return
    axis = p1 - p0
    length = float(np.hypot(*axis))
    normal = np.array([-axis[1], axis[0]]) / length if length > 1e-6 else np.asarray(light, float)
    if np.dot(normal, light) < 0:
        normal = -normal
    cv2.line(image, a, b, _scaled(rgb, 0.6), thickness, cv2.LINE_AA, _SHIFT)
    for width, offset, colour in ((1.35, 0.22, rgb), (0.55, 0.45, _scaled(rgb, 0.65, 85))):
        shift = normal * offset * radius
        cv2.line(image, _fixed(p0 + shift), _fixed(p1 + shift), colour,
                 max(1, int(round(width * radius))), cv2.LINE_AA, _SHIFT)  # fmt: skip
    if banded and length > 2.5 * radius and radius >= 2.5:
        unit_axis = axis / length
        across = np.array([-unit_axis[1], unit_axis[0]]) * radius * 0.92
        band = max(1, int(round(0.35 * radius)))
        for t in np.arange(1.2 * radius, length - 0.6 * radius, 2.4 * radius):
            centre = p0 + unit_axis * t
            cv2.line(image, _fixed(centre - across), _fixed(centre + across), _scaled(rgb, 0.45),
                     band, cv2.LINE_AA, _SHIFT)  # fmt: skip


def _fill_ellipse(targets, centre, half_axes, angle_deg):
    """Fill one ellipse into each (raster, value, line_type) of `targets`."""
    args = (_fixed(centre), (int(round(half_axes[0] * _ONE)), int(round(half_axes[1] * _ONE))),
            float(angle_deg), 0, 360)  # fmt: skip
    for raster, value, line_type in targets:
        cv2.ellipse(raster, *args, value, -1, line_type, _SHIFT)


@dataclasses.dataclass(frozen=True)
class _Canvas:
    """Where a figure is drawn: RGB image, part-id map, own silhouette, its id base, the light."""

    image: np.ndarray
    id_map: np.ndarray
    silhouette: np.ndarray
    id_base: int
    light: np.ndarray

    def targets(self, part: str) -> list:
        """The (raster, value, line type) of the id map and the silhouette for `part`."""
        return [(self.id_map, self.id_base + PART_ID[part], cv2.LINE_8),
                (self.silhouette, 1, cv2.LINE_8)]  # fmt: skip


# Drawable parts. Each is built in body units (the standing height is 1), knows its reach (points
# bounding what it paints), converts itself to pixels and draws itself into a _Canvas.


@dataclasses.dataclass(frozen=True)
class _Capsule:
    part: str
    depth: float
    p0: np.ndarray
    p1: np.ndarray
    radius: float
    rgb: tuple
    banded: bool = False

    def reach(self) -> np.ndarray:
        return np.array([self.p0 - self.radius, self.p0 + self.radius,
                         self.p1 - self.radius, self.p1 + self.radius])  # fmt: skip

    def to_pixels(self, offset, scale):
        return dataclasses.replace(self, p0=offset + scale * self.p0, p1=offset + scale * self.p1,
                                   radius=scale * self.radius)  # fmt: skip

    def draw(self, canvas: _Canvas):
        draw_capsule(canvas.image, self.p0, self.p1, self.radius, self.rgb, canvas.light,
                     self.banded, canvas.id_map, canvas.id_base + PART_ID[self.part],
                     canvas.silhouette)  # fmt: skip


@dataclasses.dataclass(frozen=True)
class _Torso:
    """The convex hull of the chest-to-hips box, with round shoulders and a belt."""

    depth: float
    hull: np.ndarray  # [N, 2]
    shirt: tuple
    shoulders: _Capsule
    belt: _Capsule

    def reach(self) -> np.ndarray:
        return np.concatenate([self.hull, self.shoulders.reach(), self.belt.reach()])

    def to_pixels(self, offset, scale):
        return dataclasses.replace(self, hull=offset + scale * self.hull,
                                   shoulders=self.shoulders.to_pixels(offset, scale),
                                   belt=self.belt.to_pixels(offset, scale))  # fmt: skip

    def draw(self, canvas: _Canvas):
        points = np.round(self.hull * _ONE).astype(np.int32)
        for raster, value, line_type in canvas.targets("torso"):
            cv2.fillConvexPoly(raster, points, value, line_type, _SHIFT)
        cv2.fillConvexPoly(canvas.image, points, _scaled(self.shirt, 0.7), cv2.LINE_AA, _SHIFT)
        centre = self.hull.mean(axis=0)
        size = float(np.max(np.ptp(self.hull, axis=0)))
        inner = centre + (self.hull - centre) * 0.78 + canvas.light * 0.06 * size
        cv2.fillConvexPoly(canvas.image, np.round(inner * _ONE).astype(np.int32), self.shirt,
                           cv2.LINE_AA, _SHIFT)  # fmt: skip
        self.shoulders.draw(canvas)
        self.belt.draw(canvas)


@dataclasses.dataclass(frozen=True)
class _FaceFeature:
    name: str  # a key of _FACE_FEATURES
    point: np.ndarray
    size: float


@dataclasses.dataclass(frozen=True)
class _Head:
    """An ellipse along the projected up axis; hair offset to the back and top; painted face
    features (eyes, nose) and ears in their side's colour."""

    depth: float
    centre: np.ndarray
    half_axes: np.ndarray
    angle_deg: float
    hair_centre: np.ndarray
    facing_camera: bool
    features: tuple  # of _FaceFeature, only those painted
    look: Appearance

    def reach(self) -> np.ndarray:
        half = self.half_axes.max() * 1.02
        return np.array([self.centre - half, self.centre + half,
                         self.hair_centre - half, self.hair_centre + half])  # fmt: skip

    def to_pixels(self, offset, scale):
        features = tuple(dataclasses.replace(f, point=offset + scale * f.point, size=scale * f.size)
                         for f in self.features)  # fmt: skip
        return dataclasses.replace(self, centre=offset + scale * self.centre,
                                   half_axes=scale * self.half_axes,
                                   hair_centre=offset + scale * self.hair_centre, features=features)

    def draw(self, canvas: _Canvas):
        look, head = self.look, canvas.targets("head")
        face = lambda: _fill_ellipse([(canvas.image, look.skin, cv2.LINE_AA)] + head, self.centre,
                                     self.half_axes, self.angle_deg)  # fmt: skip
        hair = lambda: _fill_ellipse([(canvas.image, look.hair, cv2.LINE_AA)] + head,
                                     self.hair_centre, self.half_axes * 0.97, self.angle_deg)
        ears = [f for f in self.features if f.name.endswith("_ear")]
        if self.facing_camera:  # hair behind the face, ears over the head's sides
            hair()
            face()
            for ear in ears:
                self._draw_ear(canvas, ear)
        else:  # seen from behind: ears under the head, hair over the face
            for ear in ears:
                self._draw_ear(canvas, ear)
            face()
            hair()
        for feature in self.features:  # eyes and nose, painted only when facing the camera
            if feature.name.endswith("_ear"):
                continue
            if feature.name == "nose":  # part of the head's outline in profile
                _fill_ellipse([(canvas.image, _scaled(look.skin, 0.72), cv2.LINE_AA)] + head,
                              feature.point, (feature.size, feature.size * 0.8), self.angle_deg)
            elif feature.size >= 1.6:  # an eye: white with a dark iris when there is room
                _fill_ellipse([(canvas.image, (235, 235, 230), cv2.LINE_AA)], feature.point,
                              (feature.size, feature.size * 0.7), self.angle_deg)  # fmt: skip
                _fill_ellipse([(canvas.image, look.eye, cv2.LINE_AA)], feature.point,
                              (feature.size * 0.55,) * 2, 0)  # fmt: skip
            else:  # a small eye: a dark dot
                _fill_ellipse([(canvas.image, look.eye, cv2.LINE_AA)], feature.point,
                              (feature.size,) * 2, 0)  # fmt: skip

    def _draw_ear(self, canvas: _Canvas, ear: _FaceFeature):
        colour = self.look.l_arm if ear.name == "l_ear" else self.look.r_arm
        targets = [(canvas.image, _scaled(colour, 0.85), cv2.LINE_AA)] + canvas.targets(ear.name)
        _fill_ellipse(targets, ear.point, (ear.size * 0.75, ear.size), 0)


@dataclasses.dataclass(frozen=True)
class Figure:
    """One posed, projected, coloured person, ready to draw.

    Attributes:
        keypoints: name -> float [2] image pixels (pixel centres at integers) for FIGURE_KEYPOINTS.
        labelled: name -> bool, False for face features turned away from the camera.
        painted: name -> bool, False for face features labelled but hidden by the head itself.
        extent: (x0, y0, x1, y1), the whole silhouette's extent in pixels, not clipped.
        head_box: (x0, y0, x1, y1), a square around the projected head, not clipped.
        height_px: standing height in pixels.
        parts: the drawable parts (capsules, torso, head) in pixels.
    """

    keypoints: dict
    labelled: dict
    painted: dict
    extent: tuple
    head_box: tuple
    height_px: float
    parts: tuple

    def draw(self, image, id_map, silhouette, id_base, light):
        """Paint the figure, far parts first.

        Args:
            image: RGB uint8 [H, W, 3], painted in place.
            id_map: uint16 [H, W]; pixels of part `name` get `id_base + PART_ID[name]`.
            silhouette: uint8 [H, W]; the figure's pixels get 1.
            id_base: the figure's base id in `id_map`.
            light: unit 2D direction towards the light (image coordinates).
        """
        canvas = _Canvas(image, id_map, silhouette, int(id_base), np.asarray(light, float))
        for part in sorted(self.parts, key=lambda part: -part.depth):
            part.draw(canvas)


def make_figure(rng: np.random.Generator, height_px: float, centre_xy, pose=None,
                same_sides: bool = False) -> Figure:
    """Sample a pose, body and clothes; place the figure's silhouette extent centre at `centre_xy`.

    Args:
        rng: the generator to draw from.
        height_px: standing height in pixels.
        centre_xy: (x, y) pixels where the centre of the figure's 2D extent goes.
        pose: optional pose in the layout of `sample_pose`'s result (sampled when None).
        same_sides: draw the right limbs (and ear) in the left side's colours and without
            bands, so that only the pose and the face tell left from right (the same random
            draws as without it: the same people, poses and scenes).
    """
    pose = sample_pose(rng) if pose is None else pose
    body = sample_proportions(rng)
    look = sample_appearance(rng)
    if same_sides:
        look = dataclasses.replace(look, r_arm=look.l_arm, r_leg=look.l_leg)
    skeleton = build_skeleton(pose, body)
    rotation = view_rotation(pose["yaw"], pose["pitch"], pose["roll"])
    camera = {name: rotation @ point for name, point in skeleton.points.items()}
    flat = {name: point[:2] for name, point in camera.items()}
    left_h, up_h, fwd_h = (rotation @ axis for axis in skeleton.head_axes)

    # Painter's order: larger depth first. Limbs at the torso's depth go on top of it, and the
    # head on top of the limbs beside it.
    limb_bias, head_bias = 0.04, 0.05
    parts = []
    for side in ("l", "r"):
        arm, leg = (look.l_arm, look.l_leg) if side == "l" else (look.r_arm, look.r_leg)
        segments = (
            ("upper_arm", "shoulder", "elbow", body.upper_arm_radius, arm),
            ("forearm", "elbow", "wrist", body.forearm_radius, _scaled(arm, 0.92, 12)),
            ("hand", "wrist", "hand_end", body.hand_radius, _scaled(arm, 0.8)),
            ("thigh", "hip", "knee", body.thigh_radius, leg),
            ("shank", "knee", "ankle", body.shank_radius, _scaled(leg, 0.92, 12)),
            ("foot", "heel", "toe", body.foot_radius, _scaled(leg, 0.6)),
        )
        for part, a, b, radius, colour in segments:
            a, b = f"{side}_{a}", f"{side}_{b}"
            depth = 0.5 * (camera[a][2] + camera[b][2]) - limb_bias
            parts.append(_Capsule(f"{side}_{part}", depth, flat[a], flat[b], radius, colour,
                                  banded=side == "r" and not same_sides))  # fmt: skip
    corners = np.array([camera[f"torso_{i}"] for i in range(8)])
    hull = cv2.convexHull(corners[:, :2].astype(np.float32)).reshape(-1, 2).astype(float)
    torso_depth = float(corners[:, 2].mean())
    parts.append(_Torso(
        torso_depth, hull, look.shirt,
        shoulders=_Capsule("torso", torso_depth, flat["l_shoulder"], flat["r_shoulder"],
                           body.upper_arm_radius * 1.15, look.shirt),
        belt=_Capsule("torso", torso_depth, flat["l_hip"], flat["r_hip"], body.thigh_radius * 0.6,
                      _scaled(look.shirt, 0.45)),
    ))  # fmt: skip
    parts.append(_Capsule("neck", 0.5 * (camera["neck_base"][2] + camera["upper_neck"][2]) - 0.01,
                          flat["neck_base"], flat["upper_neck"], body.neck_radius,
                          _scaled(look.skin, 0.85)))  # fmt: skip

    facing = {}  # > 0: the feature's surface faces the camera
    for name, (l, u, f) in _FACE_FEATURES.items():
        facing[name] = -_unit(l * left_h + u * up_h + f * fwd_h)[2]
    sizes = {"nose": 0.18, "l_ear": 0.26, "r_ear": 0.26, "l_eye": 0.17, "r_eye": 0.17}
    features = tuple(_FaceFeature(name, flat[name], sizes[name] * body.head_half_width)
                     for name in _FACE_FEATURES if facing[name] > _DRAW_FACING[name])  # fmt: skip
    head_axes = np.array([max(body.head_half_width, body.head_half_depth), body.head_half_height])
    hair_offset = -fwd_h[:2] * 0.3 * body.head_half_depth + up_h[:2] * 0.18 * body.head_half_height
    head = _Head(camera["head_centre"][2] - head_bias, flat["head_centre"], head_axes,
                 math.degrees(math.atan2(up_h[0], -up_h[1])), flat["head_centre"] + hair_offset,
                 bool(fwd_h[2] < 0), features, look)  # fmt: skip
    parts.append(head)

    # Scale to pixels and put the centre of the extent (every part's reach) at centre_xy.
    reach = np.concatenate([part.reach() for part in parts])
    low, high = reach.min(axis=0), reach.max(axis=0)
    offset = np.asarray(centre_xy, float) - height_px * 0.5 * (low + high)
    to_px = lambda point: offset + height_px * np.asarray(point[:2], float)
    head_centre, head_half = to_px(flat["head_centre"]), head_axes.max() * 1.02 * height_px
    return Figure(
        keypoints={name: to_px(flat[name]) for name in FIGURE_KEYPOINTS},
        labelled={n: facing.get(n, 1.0) > _LABEL_FACING.get(n, -1.0) for n in FIGURE_KEYPOINTS},
        painted={n: facing.get(n, 1.0) > _DRAW_FACING.get(n, -1.0) for n in FIGURE_KEYPOINTS},
        # One pixel of margin covers the rasterisation of the outermost strokes.
        extent=tuple(float(v) for v in (*(to_px(low) - 1.0), *(to_px(high) + 1.0))),
        head_box=tuple(float(v) for v in (*(head_centre - head_half), *(head_centre + head_half))),
        height_px=float(height_px),
        parts=tuple(part.to_pixels(offset, height_px) for part in parts),
    )

"""The ROS messages one action_selector decision publishes, built from the plain data of
:mod:`.selector_outputs`: the node only hands each to its publisher."""
from __future__ import annotations

import json

from geometry_msgs.msg import Twist
from std_msgs.msg import Float32MultiArray, MultiArrayDimension, String

from . import selector_outputs as outputs


def decision_messages(header, decision: outputs.Decision, library, settings: dict) -> dict:
    """Output name -> message, in publishing order: ``selected_action``, ``action_vector`` and
    (with ``publish_cmd_vel`` and a twist for the action) ``cmd_vel`` unless the node
    abstained, then ``scores`` always."""
    selection, out = decision.selection, {}
    if not decision.abstained:
        out['selected_action'] = String(data=outputs.action_name(selection))
        values = outputs.vector_values(selection)
        vector = Float32MultiArray()
        vector.layout.dim = [MultiArrayDimension(label='params', size=len(values),
                                                 stride=len(values))]
        vector.data = values
        out['action_vector'] = vector
        twist = outputs.action_twist(decision, library) if settings['publish_cmd_vel'] \
            else None
        if twist is not None:
            msg = Twist()
            msg.linear.x, msg.linear.y, msg.linear.z = map(float, twist[0])
            msg.angular.x, msg.angular.y, msg.angular.z = map(float, twist[1])
            out['cmd_vel'] = msg
    scores = outputs.scores_payload(decision, (header.stamp.sec, header.stamp.nanosec),
                                    header.frame_id, library, settings)
    out['scores'] = String(data=json.dumps(scores))
    return out

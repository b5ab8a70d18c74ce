"""What the tests share and that is not a test: no test module imports another.

bags             rosbag2 topic names, frames that say which frame they are, a Twist bag
fault_client     the reliability tests' client: every input kind, rejection counts, floods
hangs            the hang report pytest-timeout writes (test name, native threads, stacks)
images           encoded images that lie about their size
leaks            what a ROS test may not leave behind (threads, rclpy contexts)
models           tiny real Hugging Face models built and saved in-process (no downloads)
ros              the ROS tests' harness (a fresh rclpy Context each) and tiny checkpoints
selector_client  the in-process selector node tests' client: inputs in, every output recorded
training         tiny training configs and the loss log reader

Fixtures the tests share are in ../conftest.py.
"""

"""Makes a moto server enforce credentials: creates an IAM user allowed everything and prints
its access key as JSON. Run right after start with INITIAL_NO_AUTH_ACTION_COUNT=3: these three
calls are the last moto serves without checking signatures.

usage: python moto_iam.py ENDPOINT
"""
import json
import sys

import boto3

endpoint = sys.argv[1]
iam = boto3.client("iam", endpoint_url=endpoint, region_name="us-east-1",
                   aws_access_key_id="setup", aws_secret_access_key="setup")
iam.create_user(UserName="ross")
key = iam.create_access_key(UserName="ross")["AccessKey"]
iam.put_user_policy(UserName="ross", PolicyName="everything", PolicyDocument=json.dumps({
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}],
}))
print(json.dumps({"id": key["AccessKeyId"], "secret": key["SecretAccessKey"]}))

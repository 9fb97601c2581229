# HTTPS when certificate_arn names an ACM certificate, or when
# route53_zone_id names the zone of service_hostname (then the certificate is
# requested here and validated by DNS): 443 terminates TLS and port 80 only
# redirects to it. Without either (the sandbox: its emulator issues none)
# port 80 forwards plain HTTP.

locals {
  managed_certificate = var.certificate_arn == "" && var.route53_zone_id != ""
  https               = var.certificate_arn != "" || local.managed_certificate
  certificate_arn     = local.managed_certificate ? aws_acm_certificate_validation.service[0].certificate_arn : var.certificate_arn
}

# DNS validation as the ACM user guide describes it ("DNS validation"): one
# CNAME per name in the zone, and the certificate is ISSUED once ACM sees it.
resource "aws_acm_certificate" "service" {
  count = local.managed_certificate ? 1 : 0

  domain_name       = var.service_hostname
  validation_method = "DNS"

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_route53_record" "certificate_validation" {
  for_each = local.managed_certificate ? {
    for option in aws_acm_certificate.service[0].domain_validation_options : option.domain_name => option
  } : {}

  zone_id         = var.route53_zone_id
  name            = each.value.resource_record_name
  type            = each.value.resource_record_type
  records         = [each.value.resource_record_value]
  ttl             = 60
  allow_overwrite = true
}

resource "aws_acm_certificate_validation" "service" {
  count = local.managed_certificate ? 1 : 0

  certificate_arn         = aws_acm_certificate.service[0].arn
  validation_record_fqdns = [for record in aws_route53_record.certificate_validation : record.fqdn]
}

# The service's name points at the load balancer (an alias: no extra query).
resource "aws_route53_record" "service" {
  count = var.route53_zone_id != "" ? 1 : 0

  zone_id = var.route53_zone_id
  name    = var.service_hostname
  type    = "A"

  alias {
    name                   = aws_lb.app.dns_name
    zone_id                = aws_lb.app.zone_id
    evaluate_target_health = true
  }
}

resource "aws_lb" "app" {
  #checkov:skip=CKV_AWS_91:access logs need an S3 bucket with the ELB delivery policy; left to the account's central log bucket, not one per environment
  #checkov:skip=CKV2_AWS_76:the web ACL has the Log4j rules (AWSManagedRulesKnownBadInputsRuleSet); this check also demands AWSManagedRulesAnonymousIpList, which would block VPN and cloud users of a public service
  #checkov:skip=CKV2_AWS_20:port 80 redirects to 443 whenever certificate_arn is set (the listener's redirect action is conditional); only the sandbox, which has no certificate, forwards plain HTTP
  name               = local.name
  load_balancer_type = "application"
  internal           = false
  security_groups    = [aws_security_group.alb.id]
  subnets            = aws_subnet.public[*].id

  drop_invalid_header_fields = true
  enable_deletion_protection = var.alb_deletion_protection
}

resource "aws_lb_target_group" "app" {
  #checkov:skip=CKV_AWS_378:TLS ends at the load balancer; the hop to the tasks stays inside the VPC, open only from the ALB's security group
  # A prefix, not a fixed name: a change that replaces the target group
  # (port, protocol) creates the new one before the listener lets go of
  # the old one.
  name_prefix          = "app-"
  port                 = var.container_port
  protocol             = "HTTP"
  target_type          = "ip"
  vpc_id               = aws_vpc.main.id
  deregistration_delay = var.deregistration_delay_seconds

  health_check {
    path                = var.health_check_path
    matcher             = "200"
    interval            = var.health_check_interval_seconds
    timeout             = min(5, var.health_check_interval_seconds - 1) # must be below the interval
    healthy_threshold   = 2
    unhealthy_threshold = 3
  }

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_lb_listener" "http" {
  #checkov:skip=CKV_AWS_2:with certificate_arn set this listener only redirects to HTTPS; plain HTTP is served only without a certificate (the sandbox)
  #checkov:skip=CKV_AWS_103:no TLS on port 80 by design; the TLS policy is on the HTTPS listener, which exists whenever certificate_arn is set
  load_balancer_arn = aws_lb.app.arn
  port              = 80
  protocol          = "HTTP"

  # One listener that changes in place when a certificate arrives: two
  # listeners on port 80 (one forwarding, one redirecting) could not swap in
  # one apply.
  default_action {
    type             = local.https ? "redirect" : "forward"
    target_group_arn = local.https ? null : aws_lb_target_group.app.arn

    dynamic "redirect" {
      for_each = local.https ? [1] : []

      content {
        port        = "443"
        protocol    = "HTTPS"
        status_code = "HTTP_301"
      }
    }
  }
}

resource "aws_lb_listener" "https" {
  count = local.https ? 1 : 0

  load_balancer_arn = aws_lb.app.arn
  port              = 443
  protocol          = "HTTPS"
  ssl_policy        = "ELBSecurityPolicy-TLS13-1-2-2021-06"
  certificate_arn   = local.certificate_arn

  default_action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.app.arn
  }
}
